//! The route an application put in its own session id, as Tomcat does with `jvmRoute`:
//! `JSESSIONID=<id>.<route>` in a cookie, or `;jsessionid=<id>.<route>` in the URL path when the
//! client refuses cookies. The route is what follows the last dot.

/// The route in a `;name=` path parameter of `path`, else in the first of `names` found among
/// the request's `Cookie` headers. The URL comes first, as in `mod_jk` and `mod_proxy_balancer`: an
/// application that rewrote the URL did so on purpose. Cookie names compare exactly (as servlet
/// containers do); the path parameter name without regard to case.
pub fn find<'a, C>(cookie_headers: &C, path: &'a str, names: &[String]) -> Option<&'a str>
where
    C: IntoIterator<Item = &'a str> + Clone,
{
    session_id(cookie_headers, path, names).and_then(route_of)
}

/// The whole session id (`<id>.<route>`) that `find` takes the route from.
pub fn session_id<'a, C>(cookie_headers: &C, path: &'a str, names: &[String]) -> Option<&'a str>
where
    C: IntoIterator<Item = &'a str> + Clone,
{
    if let Some(id) = path_param(path, names) {
        return Some(id);
    }
    names.iter().find_map(|name| {
        cookie_headers.clone().into_iter().flat_map(super::cookie::pairs).find_map(|(k, v)| {
            let id = v?.trim_matches('"');
            (k == name && route_of(id).is_some()).then_some(id)
        })
    })
}

fn path_param<'a>(path: &'a str, names: &[String]) -> Option<&'a str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    for param in path.split(';').skip(1) {
        if let Some((k, v)) = param.split_once('=')
            && names.iter().any(|n| n.eq_ignore_ascii_case(k))
        {
            let v = v.split('/').next().unwrap_or("");
            if route_of(v).is_some() {
                return Some(v);
            }
        }
    }
    None
}

/// What follows the first dot of a session id, if anything does: the id itself has none, and a
/// route may (`mod_jk` and `mod_proxy_balancer` read it so too: `tomcat-6.0.26-1` is a route).
pub fn route_of(session_id: &str) -> Option<&str> {
    session_id.split_once('.').map(|(_, r)| r).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["JSESSIONID".into(), "jsessionid".into()]
    }

    #[test]
    fn route_comes_from_the_session_cookie() {
        let h = ["theme=dark; JSESSIONID=8F3A2C.tomcat2; lang=en"];
        assert_eq!(find(&h, "/app", &names()), Some("tomcat2"));
    }

    #[test]
    fn route_is_after_the_first_dot_as_mod_jk_reads_it_and_quotes_are_dropped() {
        let h = ["JSESSIONID=\"abc.node-3\""];
        assert_eq!(find(&h, "/", &names()), Some("node-3"));
        // mod_jk's worker names (and so Tomcat's jvmRoute) may hold dots.
        let h = ["JSESSIONID=8F3A2C.tomcat-6.0.26-1"];
        assert_eq!(find(&h, "/", &names()), Some("tomcat-6.0.26-1"));
    }

    #[test]
    fn no_dot_or_an_empty_route_means_no_route() {
        assert_eq!(find(&["JSESSIONID=8F3A2C"], "/", &names()), None);
        assert_eq!(find(&["JSESSIONID=8F3A2C."], "/", &names()), None);
    }

    #[test]
    fn several_cookie_headers_and_names_are_searched_in_order() {
        let h = ["a=1", "jsessionid=x.r2", "JSESSIONID=y.r1"];
        assert_eq!(find(&h, "/", &names()), Some("r1"), "the first configured name wins");
        let php = vec!["PHPSESSID".to_owned()];
        assert_eq!(find(&["PHPSESSID=abc.web7"], "/", &php), Some("web7"));
        assert_eq!(find(&["JSESSIONID=abc.web7"], "/", &php), None);
    }

    #[test]
    fn the_path_parameter_wins_over_the_cookie() {
        assert_eq!(find(&["JSESSIONID=a.r1"], "/x;jsessionid=b.r2", &names()), Some("r2"));
    }

    #[test]
    fn route_comes_from_the_path_parameter_without_cookies() {
        let none: [&str; 0] = [];
        let none = none.iter().copied();
        assert_eq!(find(&none, "/shop/cart;jsessionid=8F3A.tomcat1?item=3", &names()), Some("tomcat1"));
        assert_eq!(find(&none, "/a;JSESSIONID=8F3A.t9/b", &names()), Some("t9"));
        assert_eq!(find(&none, "/a?x=;jsessionid=1.t1", &names()), None, "not in the query");
    }
}
