//! Running the loaded XDP program on a frame with `BPF_PROG_TEST_RUN`, like Katran's fixture
//! tester: the verdict and every output byte can be asserted.

use aya::programs::{TestRun as _, TestRunOptions, Xdp};

/// XDP verdicts, by name, so failures print something readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_ABORTED`.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`.
    Redirect,
}

impl Verdict {
    fn from_raw(v: u32) -> Self {
        match v {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            other => panic!("program returned {other}, which is no XDP action"),
        }
    }
}

/// Runs `prog` once on `frame`; returns the verdict and the frame as the program left it.
///
/// # Panics
/// When the kernel refuses the run (not root, program not loaded).
pub fn run(prog: &Xdp, frame: &[u8]) -> (Verdict, Vec<u8>) {
    // Room for encapsulation headers on top of the input.
    let mut out = vec![0u8; frame.len() + 256];
    let res = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (Verdict::from_raw(res.return_value), out)
}
