//! Reading a ListObjectsV2 answer: how many keys, whether it is truncated,
//! and the continuation token. Tags cannot occur inside values (`<` is
//! always escaped), so a scan for them is exact.

use anyhow::bail;

/// One page of a listing.
#[derive(Debug, PartialEq, Eq)]
pub struct ListPage {
    /// `<Contents>` entries on the page.
    pub keys: u64,
    /// The token of the next page, if the listing is truncated.
    pub next: Option<String>,
    /// Size of the XML answer.
    pub bytes: u64,
}

pub fn parse_list_page(xml: &str, bytes: u64) -> anyhow::Result<ListPage> {
    if !xml.contains("<ListBucketResult") {
        bail!(
            "not a ListObjectsV2 answer: {}",
            xml.chars().take(200).collect::<String>()
        );
    }
    let keys = xml.matches("<Contents>").count() as u64;
    let truncated = text_of(xml, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = if truncated {
        match text_of(xml, "NextContinuationToken") {
            Some(t) if !t.is_empty() => Some(unescape(t)),
            _ => bail!("a truncated listing without NextContinuationToken"),
        }
    } else {
        None
    };
    Ok(ListPage { keys, next, bytes })
}

/// The text of the first `<name>…</name>`.
fn text_of<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// XML's five entities and numeric character references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_truncated_page() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>a&amp;b</Key><Size>1</Size></Contents><Contents><Key>c</Key><Size>1</Size></Contents>
<NextContinuationToken>tok&amp;&#x2F;&lt;x&#47;</NextContinuationToken></ListBucketResult>"#;
        let p = parse_list_page(xml, 9).unwrap();
        assert_eq!(
            p,
            ListPage {
                keys: 2,
                next: Some("tok&/<x/".into()),
                bytes: 9
            }
        );
    }

    #[test]
    fn reads_the_last_page_and_refuses_others() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(parse_list_page(xml, 1).unwrap().next, None);
        assert_eq!(parse_list_page(xml, 1).unwrap().keys, 0);
        assert!(parse_list_page("<Error><Code>NoSuchBucket</Code></Error>", 1).is_err());
        let bad = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
        assert!(parse_list_page(bad, 1).is_err());
        assert_eq!(unescape("a&b;&zz;"), "a&b;&zz;");
    }
}
