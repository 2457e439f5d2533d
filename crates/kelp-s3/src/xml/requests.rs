//! Request bodies.
//!
//! ```text
//! <CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"…"</ETag>
//!   [<ChecksumCRC32>…</ChecksumCRC32>]</Part>…</CompleteMultipartUpload>
//! <Delete><Quiet>true</Quiet><Object><Key>k</Key>[<VersionId>v</VersionId>]</Object>…</Delete>
//! <Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag>…</TagSet></Tagging>
//! <VersioningConfiguration><Status>Enabled|Suspended</Status></VersioningConfiguration>
//! <CreateBucketConfiguration><LocationConstraint>r</LocationConstraint></CreateBucketConfiguration>
//! ```

use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::error::{S3Error, S3ErrorCode, S3Result, err};
use crate::etag::ETag;
use crate::xml::{Node, malformed, parse};

/// Largest CompleteMultipartUpload body (10000 parts with checksums).
pub const MAX_COMPLETE_BODY: usize = 2 << 20;
/// Largest Delete body (1000 keys of 1024 bytes, escaped).
pub const MAX_DELETE_BODY: usize = 2 << 20;
/// Largest body for the small configurations (tagging, versioning, CORS, location, ACL).
pub const MAX_CONFIG_BODY: usize = 64 << 10;
/// Most keys in one DeleteObjects.
pub const MAX_DELETE_OBJECTS: usize = 1000;
/// Most parts in one upload.
pub const MAX_PARTS: u32 = 10_000;
/// Most tags on an object / a bucket.
pub const MAX_OBJECT_TAGS: usize = 10;
pub const MAX_BUCKET_TAGS: usize = 50;

fn root<'a>(n: &'a Node, name: &str) -> S3Result<&'a Node> {
    if n.name != name {
        return Err(malformed(&format!("expected <{name}>")));
    }
    Ok(n)
}

/// One part named in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: ETag,
    pub checksums: Vec<Checksum>,
}

/// Parts in ascending order (else `InvalidPartOrder`), 1..=10000.
pub fn parse_complete_multipart_upload(body: &[u8]) -> S3Result<Vec<CompletedPart>> {
    let doc = parse(body, MAX_COMPLETE_BODY)?;
    let doc = root(&doc, "CompleteMultipartUpload")?;
    let mut parts = Vec::new();
    for p in doc.all("Part") {
        let n: u32 = p
            .text_of("PartNumber")
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| malformed("Part needs a PartNumber"))?;
        if !(1..=MAX_PARTS).contains(&n) {
            return err(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            );
        }
        let etag = p
            .text_of("ETag")
            .ok_or_else(|| malformed("Part needs an ETag"))?;
        let mut checksums = Vec::new();
        for c in &p.children {
            if let Some(a) = [
                ChecksumAlgorithm::Crc32,
                ChecksumAlgorithm::Crc32c,
                ChecksumAlgorithm::Sha1,
                ChecksumAlgorithm::Sha256,
                ChecksumAlgorithm::Crc64Nvme,
            ]
            .into_iter()
            .find(|a| a.xml_name() == c.name)
            {
                checksums.push(Checksum::parse(a, &c.text)?);
            }
        }
        if parts
            .last()
            .is_some_and(|l: &CompletedPart| l.part_number >= n)
        {
            return Err(S3Error::new(S3ErrorCode::InvalidPartOrder));
        }
        parts.push(CompletedPart {
            part_number: n,
            etag: ETag::parse(etag),
            checksums,
        });
    }
    if parts.is_empty() {
        return Err(malformed("CompleteMultipartUpload needs at least one Part"));
    }
    Ok(parts)
}

/// One key in DeleteObjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentifier {
    pub key: String,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub objects: Vec<ObjectIdentifier>,
}

/// 1..=1000 objects.
pub fn parse_delete(body: &[u8]) -> S3Result<DeleteRequest> {
    let doc = parse(body, MAX_DELETE_BODY)?;
    let doc = root(&doc, "Delete")?;
    let quiet = match doc.text_of("Quiet").map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(malformed("Quiet must be true or false")),
    };
    let mut objects = Vec::new();
    for o in doc.all("Object") {
        if objects.len() == MAX_DELETE_OBJECTS {
            return Err(malformed("at most 1000 objects can be deleted at once"));
        }
        let key = o
            .text_of("Key")
            .ok_or_else(|| malformed("Object needs a Key"))?;
        let version_id = o
            .text_of("VersionId")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        objects.push(ObjectIdentifier {
            key: key.to_owned(),
            version_id,
        });
    }
    if objects.is_empty() {
        return Err(malformed("Delete needs at least one Object"));
    }
    Ok(DeleteRequest { quiet, objects })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// Checks a tag set: at most `max` tags, keys 1..=128 and values ≤ 256
/// characters, keys unique; `InvalidTag` otherwise.
pub fn validate_tags(tags: &[Tag], max: usize) -> S3Result<()> {
    if tags.len() > max {
        return err(
            S3ErrorCode::InvalidTag,
            format!("Object tags cannot be greater than {max}"),
        );
    }
    for (i, t) in tags.iter().enumerate() {
        let kl = t.key.chars().count();
        if kl == 0 || kl > 128 {
            return err(
                S3ErrorCode::InvalidTag,
                "The TagKey you have provided is invalid",
            );
        }
        if t.value.chars().count() > 256 {
            return err(
                S3ErrorCode::InvalidTag,
                "The TagValue you have provided is invalid",
            );
        }
        if tags[..i].iter().any(|o| o.key == t.key) {
            return err(
                S3ErrorCode::InvalidTag,
                "Cannot provide multiple Tags with the same key",
            );
        }
    }
    Ok(())
}

/// `<Tagging>`; `max` is [`MAX_OBJECT_TAGS`] or [`MAX_BUCKET_TAGS`].
pub fn parse_tagging(body: &[u8], max: usize) -> S3Result<Vec<Tag>> {
    let doc = parse(body, MAX_CONFIG_BODY)?;
    let doc = root(&doc, "Tagging")?;
    let set = doc
        .child("TagSet")
        .ok_or_else(|| malformed("Tagging needs a TagSet"))?;
    let mut tags = Vec::new();
    for t in set.all("Tag") {
        if tags.len() > max {
            break;
        }
        let key = t
            .text_of("Key")
            .ok_or_else(|| malformed("Tag needs a Key"))?;
        let value = t
            .text_of("Value")
            .ok_or_else(|| malformed("Tag needs a Value"))?;
        tags.push(Tag {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    validate_tags(&tags, max)?;
    Ok(tags)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersioningStatus {
    Enabled,
    Suspended,
}

/// `None` when the body has no Status (a no-op in S3).
pub fn parse_versioning(body: &[u8]) -> S3Result<Option<VersioningStatus>> {
    let doc = parse(body, MAX_CONFIG_BODY)?;
    let doc = root(&doc, "VersioningConfiguration")?;
    match doc.text_of("Status").map(str::trim) {
        None => Ok(None),
        Some("Enabled") => Ok(Some(VersioningStatus::Enabled)),
        Some("Suspended") => Ok(Some(VersioningStatus::Suspended)),
        Some(_) => Err(malformed("Status must be Enabled or Suspended")),
    }
}

/// The LocationConstraint of a CreateBucket body; an empty body is none.
pub fn parse_create_bucket(body: &[u8]) -> S3Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc = parse(body, MAX_CONFIG_BODY)?;
    let doc = root(&doc, "CreateBucketConfiguration")?;
    Ok(doc
        .text_of("LocationConstraint")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// Checks an AccessControlPolicy body is XML; its grants are ignored.
pub fn parse_access_control_policy(body: &[u8]) -> S3Result<()> {
    let doc = parse(body, MAX_CONFIG_BODY)?;
    root(&doc, "AccessControlPolicy").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete() {
        let b = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Part><PartNumber>1</PartNumber><ETag>"a54357aff0632cce46d942af68356b38"</ETag></Part>
            <Part><ETag>0c78aef83f66abc1fa1e8477f296d394</ETag><PartNumber>2</PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>
        </CompleteMultipartUpload>"#;
        let p = parse_complete_multipart_upload(b).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].etag.as_str(), "a54357aff0632cce46d942af68356b38");
        assert_eq!(p[1].etag.as_str(), "0c78aef83f66abc1fa1e8477f296d394");
        assert_eq!(p[1].checksums[0].algorithm, ChecksumAlgorithm::Crc32);
        let code = |b: &str| {
            parse_complete_multipart_upload(b.as_bytes())
                .unwrap_err()
                .code
        };
        let part = |n: &str| format!("<Part><PartNumber>{n}</PartNumber><ETag>x</ETag></Part>");
        use S3ErrorCode::*;
        assert_eq!(
            code(&format!(
                "<CompleteMultipartUpload>{}{}</CompleteMultipartUpload>",
                part("2"),
                part("1")
            )),
            InvalidPartOrder
        );
        assert_eq!(
            code(&format!(
                "<CompleteMultipartUpload>{}{}</CompleteMultipartUpload>",
                part("1"),
                part("1")
            )),
            InvalidPartOrder
        );
        assert_eq!(
            code(&format!(
                "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
                part("0")
            )),
            InvalidArgument
        );
        assert_eq!(
            code(&format!(
                "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
                part("10001")
            )),
            InvalidArgument
        );
        assert_eq!(
            code(&format!(
                "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
                part("x")
            )),
            MalformedXML
        );
        assert_eq!(
            code("<CompleteMultipartUpload></CompleteMultipartUpload>"),
            MalformedXML
        );
        assert_eq!(code("<Other/>"), MalformedXML);
        assert_eq!(
            code(
                "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"
            ),
            MalformedXML
        );
    }

    #[test]
    fn delete() {
        let d = parse_delete(b"<Delete><Quiet>true</Quiet><Object><Key>a &amp; b</Key></Object><Object><Key>c</Key><VersionId>v1</VersionId></Object></Delete>").unwrap();
        assert!(d.quiet);
        assert_eq!(
            d.objects[0],
            ObjectIdentifier {
                key: "a & b".into(),
                version_id: None
            }
        );
        assert_eq!(d.objects[1].version_id.as_deref(), Some("v1"));
        let many = format!(
            "<Delete>{}</Delete>",
            "<Object><Key>k</Key></Object>".repeat(1001)
        );
        assert_eq!(
            parse_delete(many.as_bytes()).unwrap_err().code,
            S3ErrorCode::MalformedXML
        );
        let ok = format!(
            "<Delete>{}</Delete>",
            "<Object><Key>k</Key></Object>".repeat(1000)
        );
        assert_eq!(parse_delete(ok.as_bytes()).unwrap().objects.len(), 1000);
        assert!(parse_delete(b"<Delete></Delete>").is_err());
        assert!(
            parse_delete(b"<Delete><Quiet>yes</Quiet><Object><Key>k</Key></Object></Delete>")
                .is_err()
        );
    }

    #[test]
    fn tagging() {
        let t = parse_tagging(b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag><Tag><Key>b</Key><Value></Value></Tag></TagSet></Tagging>", MAX_OBJECT_TAGS).unwrap();
        assert_eq!(
            t,
            vec![
                Tag {
                    key: "a".into(),
                    value: "1".into()
                },
                Tag {
                    key: "b".into(),
                    value: "".into()
                }
            ]
        );
        let tag = |k: &str, v: &str| format!("<Tag><Key>{k}</Key><Value>{v}</Value></Tag>");
        let doc = |tags: String| format!("<Tagging><TagSet>{tags}</TagSet></Tagging>");
        let eleven: String = (0..11).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert_eq!(
            parse_tagging(doc(eleven.clone()).as_bytes(), MAX_OBJECT_TAGS)
                .unwrap_err()
                .code,
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            parse_tagging(doc(eleven).as_bytes(), MAX_BUCKET_TAGS)
                .unwrap()
                .len(),
            11
        );
        for (k, v) in [
            ("", "v"),
            (&"k".repeat(129)[..], "v"),
            ("k", &"v".repeat(257)[..]),
        ] {
            assert_eq!(
                parse_tagging(doc(tag(k, v)).as_bytes(), 10)
                    .unwrap_err()
                    .code,
                S3ErrorCode::InvalidTag
            );
        }
        assert!(parse_tagging(doc(tag(&"é".repeat(128), &"é".repeat(256))).as_bytes(), 10).is_ok());
        assert_eq!(
            parse_tagging(doc(tag("a", "1") + &tag("a", "2")).as_bytes(), 10)
                .unwrap_err()
                .code,
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            parse_tagging(b"<Tagging/>", 10).unwrap_err().code,
            S3ErrorCode::MalformedXML
        );
    }

    #[test]
    fn versioning_location_acl() {
        assert_eq!(
            parse_versioning(
                b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
            )
            .unwrap(),
            Some(VersioningStatus::Enabled)
        );
        assert_eq!(
            parse_versioning(
                b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"
            )
            .unwrap(),
            Some(VersioningStatus::Suspended)
        );
        assert_eq!(
            parse_versioning(b"<VersioningConfiguration/>").unwrap(),
            None
        );
        assert!(
            parse_versioning(
                b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>"
            )
            .is_err()
        );
        assert_eq!(parse_create_bucket(b"").unwrap(), None);
        assert_eq!(
            parse_create_bucket(b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>").unwrap().as_deref(),
            Some("eu-west-1")
        );
        assert!(
            parse_access_control_policy(b"<AccessControlPolicy><Owner/></AccessControlPolicy>")
                .is_ok()
        );
        assert!(parse_access_control_policy(b"<Nope/>").is_err());
    }
}
