//! Bucket CORS: the configuration document and request matching.
//!
//! ```text
//! <CORSConfiguration><CORSRule>
//!   [<ID>id</ID>] <AllowedOrigin>https://*.example.com</AllowedOrigin>…
//!   <AllowedMethod>GET|PUT|POST|DELETE|HEAD</AllowedMethod>…
//!   [<AllowedHeader>x-amz-*</AllowedHeader>…] [<ExposeHeader>ETag</ExposeHeader>…]
//!   [<MaxAgeSeconds>3000</MaxAgeSeconds>]
//! </CORSRule>…</CORSConfiguration>
//! ```
//!
//! Origins and headers may hold one `*` wildcard; headers match without
//! regard to case. The first rule that allows origin, method and every
//! requested header answers.

use crate::error::{S3Error, S3ErrorCode, S3Result, err};
use crate::request::Preflight;
use crate::xml::requests::MAX_CONFIG_BODY;
use crate::xml::{Writer, malformed, parse};

/// Most rules in a configuration (as S3).
pub const MAX_RULES: usize = 100;
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsConfiguration {
    pub rules: Vec<CorsRule>,
}

/// Matches `pattern` (at most one `*`) against `s`.
fn wildcard(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, suf)) => {
            s.len() >= pre.len() + suf.len() && s.starts_with(pre) && s.ends_with(suf)
        }
    }
}

impl CorsRule {
    fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|p| wildcard(p, origin))
    }

    fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    fn allows_header(&self, h: &str) -> bool {
        let h = h.to_ascii_lowercase();
        self.allowed_headers
            .iter()
            .any(|p| wildcard(&p.to_ascii_lowercase(), &h))
    }

    /// `*` when the rule allows every origin, else the origin itself.
    fn allow_origin_value(&self, origin: &str) -> String {
        if self.allowed_origins.iter().any(|o| o == "*") {
            "*".to_owned()
        } else {
            origin.to_owned()
        }
    }

    fn common_headers(&self, origin: &str, out: &mut Vec<(String, String)>) {
        let allow = self.allow_origin_value(origin);
        if allow != "*" {
            out.push(("Access-Control-Allow-Credentials".into(), "true".into()));
        }
        out.push(("Access-Control-Allow-Origin".into(), allow));
        out.push((
            "Vary".into(),
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".into(),
        ));
    }
}

impl CorsConfiguration {
    /// Parses and checks a PUT ?cors body.
    pub fn parse(body: &[u8]) -> S3Result<Self> {
        let doc = parse(body, MAX_CONFIG_BODY)?;
        if doc.name != "CORSConfiguration" {
            return Err(malformed("expected <CORSConfiguration>"));
        }
        let texts = |n: &crate::xml::Node, name: &str| -> Vec<String> {
            n.all(name).map(|c| c.text.trim().to_owned()).collect()
        };
        let mut rules = Vec::new();
        for r in doc.all("CORSRule") {
            if rules.len() == MAX_RULES {
                return err(
                    S3ErrorCode::InvalidRequest,
                    "The number of CORS rules should not exceed allowed limit of 100 rules.",
                );
            }
            let rule = CorsRule {
                id: r.text_of("ID").map(str::to_owned),
                allowed_origins: texts(r, "AllowedOrigin"),
                allowed_methods: texts(r, "AllowedMethod"),
                allowed_headers: texts(r, "AllowedHeader"),
                expose_headers: texts(r, "ExposeHeader"),
                max_age_seconds: match r.text_of("MaxAgeSeconds") {
                    None => None,
                    Some(s) => Some(
                        s.trim()
                            .parse()
                            .map_err(|_| malformed("MaxAgeSeconds must be a number"))?,
                    ),
                },
            };
            if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
                return Err(malformed("CORSRule needs AllowedOrigin and AllowedMethod"));
            }
            if let Some(m) = rule
                .allowed_methods
                .iter()
                .find(|m| !METHODS.contains(&m.as_str()))
            {
                return err(
                    S3ErrorCode::InvalidRequest,
                    format!(
                        "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                    ),
                );
            }
            if let Some(o) = rule
                .allowed_origins
                .iter()
                .find(|o| o.matches('*').count() > 1)
            {
                return err(
                    S3ErrorCode::InvalidRequest,
                    format!("AllowedOrigin \"{o}\" can not have more than one wildcard."),
                );
            }
            if let Some(h) = rule
                .allowed_headers
                .iter()
                .find(|h| h.matches('*').count() > 1)
            {
                return err(
                    S3ErrorCode::InvalidRequest,
                    format!("AllowedHeader \"{h}\" can not have more than one wildcard."),
                );
            }
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err(malformed("CORSConfiguration needs at least one CORSRule"));
        }
        Ok(CorsConfiguration { rules })
    }

    /// The GET ?cors document.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new("CORSConfiguration");
        for r in &self.rules {
            w.open("CORSRule").opt("ID", r.id.as_deref());
            for (tag, list) in [
                ("AllowedOrigin", &r.allowed_origins),
                ("AllowedMethod", &r.allowed_methods),
                ("AllowedHeader", &r.allowed_headers),
                ("ExposeHeader", &r.expose_headers),
            ] {
                for v in list {
                    w.elem(tag, v);
                }
            }
            if let Some(m) = r.max_age_seconds {
                w.elem("MaxAgeSeconds", &m.to_string());
            }
            w.close("CORSRule");
        }
        w.finish("CORSConfiguration")
    }

    /// Answers a preflight: the headers for a 200, or `CORSResponse` 403.
    pub fn preflight(&self, p: &Preflight) -> S3Result<Vec<(String, String)>> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.allows_origin(&p.origin) && r.allows_method(&p.method) && p.headers.iter().all(|h| r.allows_header(h)))
            .ok_or_else(|| S3Error::with_message(S3ErrorCode::CORSResponse, "This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec."))?;
        let mut out = Vec::new();
        rule.common_headers(&p.origin, &mut out);
        out.push((
            "Access-Control-Allow-Methods".into(),
            rule.allowed_methods.join(", "),
        ));
        if !p.headers.is_empty() {
            out.push(("Access-Control-Allow-Headers".into(), p.headers.join(", ")));
        }
        if !rule.expose_headers.is_empty() {
            out.push((
                "Access-Control-Expose-Headers".into(),
                rule.expose_headers.join(", "),
            ));
        }
        if let Some(m) = rule.max_age_seconds {
            out.push(("Access-Control-Max-Age".into(), m.to_string()));
        }
        Ok(out)
    }

    /// Headers to add to an actual request's response (none if no rule matches).
    pub fn actual(&self, origin: &str, method: &str) -> Vec<(String, String)> {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.allows_origin(origin) && r.allows_method(method))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        rule.common_headers(origin, &mut out);
        out.push((
            "Access-Control-Allow-Methods".into(),
            rule.allowed_methods.join(", "),
        ));
        if !rule.expose_headers.is_empty() {
            out.push((
                "Access-Control-Expose-Headers".into(),
                rule.expose_headers.join(", "),
            ));
        }
        if let Some(m) = rule.max_age_seconds {
            out.push(("Access-Control-Max-Age".into(), m.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
      <CORSRule><ID>web</ID><AllowedOrigin>https://*.example.com</AllowedOrigin>
        <AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod>
        <AllowedHeader>Content-*</AllowedHeader><AllowedHeader>x-amz-date</AllowedHeader>
        <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule>
      <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>
    </CORSConfiguration>"#;

    fn pf(origin: &str, method: &str, headers: &[&str]) -> Preflight {
        Preflight {
            origin: origin.into(),
            method: method.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn get<'a>(h: &'a [(String, String)], n: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
    }

    #[test]
    fn parse_render_round_trip() {
        let c = CorsConfiguration::parse(DOC.as_bytes()).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].max_age_seconds, Some(3000));
        assert_eq!(CorsConfiguration::parse(c.to_xml().as_bytes()).unwrap(), c);
    }

    #[test]
    fn preflights() {
        let c = CorsConfiguration::parse(DOC.as_bytes()).unwrap();
        let h = c
            .preflight(&pf(
                "https://app.example.com",
                "PUT",
                &["content-type", "X-Amz-Date"],
            ))
            .unwrap();
        assert_eq!(
            get(&h, "Access-Control-Allow-Origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get(&h, "Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(get(&h, "Access-Control-Allow-Methods"), Some("PUT, GET"));
        assert_eq!(
            get(&h, "Access-Control-Allow-Headers"),
            Some("content-type, X-Amz-Date")
        );
        assert_eq!(get(&h, "Access-Control-Expose-Headers"), Some("ETag"));
        assert_eq!(get(&h, "Access-Control-Max-Age"), Some("3000"));
        // A header the rule lacks, a method, an origin: refused or next rule.
        let no = |p: Preflight| c.preflight(&p).unwrap_err().code;
        assert_eq!(
            no(pf("https://app.example.com", "PUT", &["authorization"])),
            S3ErrorCode::CORSResponse
        );
        assert_eq!(
            no(pf("https://app.example.com", "DELETE", &[])),
            S3ErrorCode::CORSResponse
        );
        assert_eq!(
            no(pf("http://app.example.com", "PUT", &[])),
            S3ErrorCode::CORSResponse
        );
        assert_eq!(S3Error::new(S3ErrorCode::CORSResponse).status(), 403);
        let any = c.preflight(&pf("http://other", "GET", &[])).unwrap();
        assert_eq!(get(&any, "Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(get(&any, "Access-Control-Allow-Credentials"), None);
        // The wildcard needs the suffix: "https://.example.com" has an empty middle and still matches.
        assert!(c.preflight(&pf("https://.example.com", "PUT", &[])).is_ok());
        assert!(c.preflight(&pf("https://example.com", "PUT", &[])).is_err());
    }

    #[test]
    fn actual_requests() {
        let c = CorsConfiguration::parse(DOC.as_bytes()).unwrap();
        assert_eq!(
            get(
                &c.actual("https://a.example.com", "GET"),
                "Access-Control-Expose-Headers"
            ),
            Some("ETag")
        );
        assert_eq!(
            get(&c.actual("http://x", "GET"), "Access-Control-Allow-Origin"),
            Some("*")
        );
        assert!(c.actual("http://x", "PUT").is_empty());
    }

    #[test]
    fn refusals() {
        let rule = |inner: &str| {
            format!("<CORSConfiguration><CORSRule>{inner}</CORSRule></CORSConfiguration>")
        };
        let code = |d: String| CorsConfiguration::parse(d.as_bytes()).unwrap_err().code;
        use S3ErrorCode::*;
        assert_eq!(
            code(rule(
                "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"
            )),
            InvalidRequest
        );
        assert_eq!(
            code(rule(
                "<AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
            )),
            InvalidRequest
        );
        assert_eq!(
            code(rule("<AllowedMethod>GET</AllowedMethod>")),
            MalformedXML
        );
        assert_eq!(
            code(rule(
                "<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>x</MaxAgeSeconds>"
            )),
            MalformedXML
        );
        assert_eq!(code("<CORSConfiguration/>".into()), MalformedXML);
        let many = format!("<CORSConfiguration>{}</CORSConfiguration>", "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>".repeat(101));
        assert_eq!(code(many), InvalidRequest);
    }
}
