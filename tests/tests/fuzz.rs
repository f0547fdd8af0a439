//! The XDP program against generated and mutated frames; `cargo xtask soak` runs a million.

use balancer_tests::{fuzz, require_root};

#[test]
fn mutated_frames_are_passed_untouched_or_sent_to_the_tables_backend_well_formed() {
    require_root!();
    let frames = std::env::var("BALANCER_FUZZ_FRAMES").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let seed = std::env::var("BALANCER_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x5eed_f00d);
    let o = fuzz::run(frames, seed);
    eprintln!("{frames} frames (seed {seed:#x}): {o:?}");
    assert!(o.forwarded > frames / 10 && o.passed > frames / 10, "the mix exercises both outcomes: {o:?}");
    assert_eq!(o.misroutes, 0, "{:#?}", o.wrong);
}
