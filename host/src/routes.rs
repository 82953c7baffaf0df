//! HTTP route matching with Spin's route syntax.
//!
//! A route is an exact path (`/users`), a path with named segments (`/users/:id`), or either of
//! those ending in a wildcard `/...` that matches the prefix and anything below it (`/...` alone
//! matches every path). When several routes match, an exact route wins over one with named
//! segments, which wins over a wildcard; among wildcards the longest prefix wins.

use std::collections::BTreeMap;

/// A route as the manifest wrote it, compiled for matching.
#[derive(Debug, Clone)]
struct CompiledRoute {
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
    target: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// What a request path matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the trigger the route belongs to, as given to [`Router::new`].
    pub target: usize,
    /// The route as the manifest wrote it (`/example/...`).
    pub raw_route: String,
    /// The route without its wildcard (`/example`).
    pub component_route: String,
    /// The part of the path below the matched prefix (`/redis/k` for `/example/redis/k`).
    pub path_info: String,
    /// The values of named segments.
    pub params: BTreeMap<String, String>,
}

/// Checks that `route` is in Spin's syntax.
pub fn check_route(route: &str) -> Result<(), String> {
    compile(route, 0).map(|_| ())
}

fn compile(route: &str, target: usize) -> Result<CompiledRoute, String> {
    if !route.starts_with('/') {
        return Err(format!("route `{route}` must start with `/`"));
    }
    let (prefix, wildcard) = match route.strip_suffix("/...") {
        Some(prefix) => (prefix, true),
        None => (route, false),
    };
    let mut segments = Vec::new();
    for part in prefix.split('/').filter(|part| !part.is_empty()) {
        if part == "..." || part.contains('*') {
            return Err(format!(
                "route `{route}`: a wildcard may only end a route, as `/...`"
            ));
        }
        match part.strip_prefix(':') {
            Some("") => return Err(format!("route `{route}`: a `:` segment needs a name")),
            Some(name) => segments.push(Segment::Param(name.to_owned())),
            None => segments.push(Segment::Literal(part.to_owned())),
        }
    }
    Ok(CompiledRoute {
        raw: route.to_owned(),
        segments,
        wildcard,
        target,
    })
}

/// Finds the route that serves a path.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<CompiledRoute>,
}

impl Router {
    /// Compiles `routes`; each is paired with the index it is returned as.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a str>) -> Result<Router, String> {
        let mut compiled: Vec<CompiledRoute> = Vec::new();
        for (target, route) in routes.into_iter().enumerate() {
            let route = compile(route, target)?;
            if let Some(other) = compiled
                .iter()
                .find(|other| other.wildcard == route.wildcard && other.segments == route.segments)
            {
                return Err(format!(
                    "routes `{}` and `{}` are the same route",
                    other.raw, route.raw
                ));
            }
            compiled.push(route);
        }
        // Most specific first: exact, then with named segments, then wildcards by length.
        compiled.sort_by_key(|route| {
            let params = route
                .segments
                .iter()
                .filter(|segment| matches!(segment, Segment::Param(_)))
                .count();
            (
                route.wildcard,
                std::cmp::Reverse(route.segments.len()),
                params,
            )
        });
        Ok(Router { routes: compiled })
    }

    /// The route that serves `path`, if any.
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
        self.routes.iter().find_map(|route| route.matches(&parts))
    }
}

impl CompiledRoute {
    fn matches(&self, parts: &[&str]) -> Option<RouteMatch> {
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return None;
        }
        let mut params = BTreeMap::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), (*part).to_owned());
                }
            }
        }
        let rest = &parts[self.segments.len()..];
        let path_info = if rest.is_empty() {
            String::new()
        } else {
            format!("/{}", rest.join("/"))
        };
        Some(RouteMatch {
            target: self.target,
            raw_route: self.raw.clone(),
            component_route: self
                .raw
                .strip_suffix("/...")
                .unwrap_or(&self.raw)
                .to_owned(),
            path_info,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_route_wins() {
        let router = Router::new([
            "/...",
            "/example/...",
            "/example/redis/...",
            "/users/:id",
            "/users/me",
            "/exact",
        ])
        .unwrap();
        let target = |path: &str| router.route(path).map(|m| m.target);
        assert_eq!(target("/"), Some(0));
        assert_eq!(target("/anything/else"), Some(0));
        assert_eq!(target("/example"), Some(1));
        assert_eq!(target("/example/notes"), Some(1));
        assert_eq!(target("/example/redis/k"), Some(2));
        assert_eq!(target("/users/me"), Some(4));
        assert_eq!(target("/users/42"), Some(3));
        assert_eq!(target("/users/42/more"), Some(0));
        assert_eq!(target("/exact"), Some(5));
    }

    #[test]
    fn reports_path_info_and_params() {
        let router = Router::new(["/example/...", "/users/:id/..."]).unwrap();
        let m = router.route("/example/redis/key").unwrap();
        assert_eq!(m.path_info, "/redis/key");
        assert_eq!(m.component_route, "/example");
        assert_eq!(m.raw_route, "/example/...");
        let m = router.route("/users/7/orders").unwrap();
        assert_eq!(m.params.get("id").map(String::as_str), Some("7"));
        assert_eq!(m.path_info, "/orders");
        assert_eq!(router.route("/example").unwrap().path_info, "");
    }

    #[test]
    fn no_route_and_bad_routes() {
        let router = Router::new(["/only"]).unwrap();
        assert!(router.route("/other").is_none());
        assert!(router.route("/only/below").is_none());
        assert!(check_route("no-slash").is_err());
        assert!(check_route("/a/.../b").is_err());
        assert!(check_route("/a/:").is_err());
        assert!(check_route("/a/*").is_err());
        assert!(Router::new(["/a/...", "/a/..."]).is_err());
    }
}
