//! Property tests of the parsers that read what others send or write: the configuration file,
//! the insert-mode cookie, the application's session route. Whatever the input, they answer
//! (a value or an error a person can act on) and never panic; what they accept round-trips.
//! `corpus/config/` holds files that once broke a parser or sit at an edge; each must load
//! with a located error or parse.

use std::path::Path;

use balancer::{config::Config, l7::cookie::Signer, l7::route};
use proptest::prelude::*;

const VALID: &str = "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[vip.l7]\nsticky = \"hash\"\n\
                     [[vip.backend]]\naddress = \"10.0.0.2\"\nport = 8080\nweight = 5\n";

fn signer() -> Signer {
    Signer::new(b"0123456789abcdef0123456789abcdef", Some(3600), Some(600)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any text: a configuration or an error naming a line within the file.
    #[test]
    fn any_text_is_a_config_or_a_located_error(text in "\\PC{0,400}") {
        if let Err(e) = Config::parse(&text, Path::new("p.toml")) {
            prop_assert!(e.line <= text.lines().count() + 1, "{e}");
            prop_assert!(!e.message.is_empty());
        }
    }

    /// A valid file with one byte changed: still an answer, never a panic.
    #[test]
    fn a_valid_file_with_a_byte_changed_is_a_config_or_a_located_error(at in 0usize..VALID.len(), b in any::<u8>()) {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes[at] = b;
        if let Ok(text) = String::from_utf8(bytes)
            && let Err(e) = Config::parse(&text, Path::new("p.toml"))
        {
            prop_assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
        }
    }

    /// Whatever a client sends as our cookie is verified or refused, never trusted blindly.
    #[test]
    fn any_cookie_value_is_refused_or_verified(value in "\\PC{0,200}", now in 0u64..u64::MAX / 2) {
        let _ = signer().verify(&value, now);
    }

    /// What we sign verifies as signed, and any one changed character is refused.
    #[test]
    fn a_signed_cookie_round_trips_and_any_change_is_refused(
        route in "[A-Za-z0-9_-]{1,24}",
        issued in 1_000u64..2_000_000_000,
        at in any::<prop::sample::Index>(),
        to in "[ -~]",
    ) {
        let s = signer();
        let value = s.sign(&route, issued, issued);
        let a = s.verify(&value, issued + 1).expect("our own cookie verifies");
        prop_assert_eq!(&a.route, &route);
        let i = at.index(value.len());
        let mut changed = value.clone();
        changed.replace_range(i..=i, &to);
        if changed != value {
            prop_assert!(s.verify(&changed, issued + 1).is_err(), "{} accepted after a change", changed);
        }
    }

    /// The session route: found in any cookie header layout, never invented.
    #[test]
    fn the_route_is_found_wherever_the_cookie_is_and_never_invented(
        id in "[A-F0-9]{8,32}",
        r in "[a-z][a-z0-9]{0,11}",
        before in "([a-z]{1,8}=[a-z0-9]{0,8}; ){0,3}",
        path in "/[a-z/]{0,20}",
        noise in "\\PC{0,80}",
    ) {
        let names = vec!["JSESSIONID".to_owned(), "jsessionid".to_owned()];
        let header = format!("{before}JSESSIONID={id}.{r}");
        prop_assert_eq!(route::find(&[header.as_str()], &path, &names), Some(r.as_str()));
        let found = route::find(&[noise.as_str()], &noise, &names);
        if let Some(found) = found {
            prop_assert!(noise.contains(found), "a route not in the input: {found}");
        }
    }
}

#[test]
fn every_file_in_the_corpus_parses_or_names_its_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let want_ok = path.file_name().unwrap().to_string_lossy().starts_with("ok-");
        match Config::parse(&text, &path) {
            Ok(_) => assert!(want_ok, "{} should be refused", path.display()),
            Err(e) => {
                assert!(!want_ok, "{}: {e}", path.display());
                assert!(e.line >= 1, "{}: no line: {e}", path.display());
            }
        }
        seen += 1;
    }
    assert!(seen >= 5, "the corpus is in {}", dir.display());
}
