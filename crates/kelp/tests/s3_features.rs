//! The S3 gateway's bucket and object features as boto3 uses them against
//! `kelp server -s3`: object and bucket tagging, CORS (configuration,
//! preflights, headers of actual requests), browser POST uploads under a
//! signed policy, versioning (versions, delete markers, reading and
//! removing versions, listing them), object ACLs, and two users who may
//! not touch each other's private buckets.
//!
//! Each test drives boto3 through a small Python script that asserts and
//! exits non-zero with what failed. Needs python3 with boto3; without
//! them the tests are skipped, except under `CI`, where they fail.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

const IDENTITIES: &str = r#"{"identities": [
  {"name": "alice", "credentials": [{"accessKey": "AKALICE", "secretKey": "alice-secret"}],
   "actions": ["Read", "Write", "List", "Tagging"]},
  {"name": "bob", "credentials": [{"accessKey": "AKBOB", "secretKey": "bob-secret"}],
   "actions": ["Read", "Write", "List", "Tagging"]}
]}"#;

/// What every script starts with: clients for both users and helpers.
const PRELUDE: &str = r#"
import base64, json, os, sys, time, urllib.error, urllib.request
import boto3, botocore
from botocore.config import Config

EP = os.environ["EP"]

def client(ak, sk):
    return boto3.client("s3", endpoint_url=EP, aws_access_key_id=ak,
        aws_secret_access_key=sk, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
            retries={"max_attempts": 1}))

alice = client("AKALICE", "alice-secret")
bob = client("AKBOB", "bob-secret")

def code(f, *a, **kw):
    """The S3 error code `f` fails with."""
    try:
        f(*a, **kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{f.__name__}({a}, {kw}) succeeded")

def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")

def body(r):
    return r["Body"].read()
"#;

/// A `kelp server -s3` with the two users; its S3 endpoint.
fn server(tmp: &Path) -> (Kelp, String) {
    let ids = tmp.join("ids.json");
    std::fs::write(&ids, IDENTITIES).unwrap();
    let dir = tmp.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = format!("-s3.config={}", ids.display());
    let kelp = kelp_server(&dir, &["-filer.port=0", "-s3", "-s3.port=0", cfg.as_str()]);
    let ep = format!("http://127.0.0.1:{}", kelp.port("s3_port"));
    (kelp, ep)
}

/// Runs `script` (after [`PRELUDE`]) against `ep`; panics with its output
/// when it fails.
fn run(tmp: &Path, name: &str, ep: &str, script: &str) {
    let file = tmp.join(format!("{name}.py"));
    std::fs::write(&file, format!("{PRELUDE}\n{script}\nprint('ok')\n")).unwrap();
    let t = Instant::now();
    let out = Command::new("python3")
        .arg(&file)
        .env("EP", ep)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CONFIG_FILE")
        .output()
        .unwrap();
    println!("{name}: {:?}", t.elapsed());
    assert!(
        out.status.success(),
        "{name} failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a server and runs one script against it.
fn scenario(name: &str, script: &str) {
    if python_with_boto3().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_kelp, ep) = server(tmp.path());
    run(tmp.path(), name, &ep, script);
}

#[test]
fn object_and_bucket_tagging_and_object_acls() {
    scenario(
        "tagging",
        r#"
alice.create_bucket(Bucket="tags")
alice.put_object(Bucket="tags", Key="d/k", Body=b"x", Tagging="a=1&b=two%20words")
got = alice.get_object_tagging(Bucket="tags", Key="d/k")["TagSet"]
eq(sorted((t["Key"], t["Value"]) for t in got), [("a", "1"), ("b", "two words")], "tags from x-amz-tagging")
eq(alice.get_object(Bucket="tags", Key="d/k")["TagCount"], 2, "tag count")

alice.put_object_tagging(Bucket="tags", Key="d/k", Tagging={"TagSet": [{"Key": "c", "Value": "3 & 4"}]})
eq(alice.get_object_tagging(Bucket="tags", Key="d/k")["TagSet"], [{"Key": "c", "Value": "3 & 4"}], "replaced tags")
eq(body(alice.get_object(Bucket="tags", Key="d/k")), b"x", "content after tagging")
ten = [{"Key": f"k{i}", "Value": "v"} for i in range(10)]
alice.put_object_tagging(Bucket="tags", Key="d/k", Tagging={"TagSet": ten})
eq(len(alice.get_object_tagging(Bucket="tags", Key="d/k")["TagSet"]), 10, "ten tags")
eleven = ten + [{"Key": "k10", "Value": "v"}]
eq(code(alice.put_object_tagging, Bucket="tags", Key="d/k", Tagging={"TagSet": eleven}), "InvalidTag", "eleven tags")
dup = [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]
eq(code(alice.put_object_tagging, Bucket="tags", Key="d/k", Tagging={"TagSet": dup}), "InvalidTag", "duplicate keys")
eq(code(alice.put_object_tagging, Bucket="tags", Key="nope", Tagging={"TagSet": []}), "NoSuchKey", "missing object")
eq(code(alice.get_object_tagging, Bucket="tags", Key="d/k", VersionId="0123456789abcdef01234567"), "NoSuchVersion", "missing version")
eq(len(alice.get_object_tagging(Bucket="tags", Key="d/k", VersionId="null")["TagSet"]), 10, "the null version")
alice.delete_object_tagging(Bucket="tags", Key="d/k")
eq(alice.get_object_tagging(Bucket="tags", Key="d/k")["TagSet"], [], "tags deleted")
eq(code(bob.get_object_tagging, Bucket="tags", Key="d/k"), "AccessDenied", "bob reads alice's tags")
eq(code(bob.put_object_tagging, Bucket="tags", Key="d/k", Tagging={"TagSet": []}), "AccessDenied", "bob tags")

eq(code(alice.get_bucket_tagging, Bucket="tags"), "NoSuchTagSet", "no bucket tags")
fifty = [{"Key": f"t{i}", "Value": str(i)} for i in range(50)]
alice.put_bucket_tagging(Bucket="tags", Tagging={"TagSet": fifty})
got = alice.get_bucket_tagging(Bucket="tags")["TagSet"]
eq(sorted(got, key=lambda t: int(t["Value"])), fifty, "fifty bucket tags")
eq(code(alice.put_bucket_tagging, Bucket="tags", Tagging={"TagSet": fifty + [{"Key": "x", "Value": "y"}]}), "InvalidTag", "51 bucket tags")
eq(code(bob.put_bucket_tagging, Bucket="tags", Tagging={"TagSet": []}), "AccessDenied", "bob tags alice's bucket")
alice.delete_bucket_tagging(Bucket="tags")
eq(code(alice.get_bucket_tagging, Bucket="tags"), "NoSuchTagSet", "bucket tags deleted")

acl = alice.get_object_acl(Bucket="tags", Key="d/k")
eq(acl["Owner"]["ID"], "alice", "object owner")
eq([g["Permission"] for g in acl["Grants"]], ["FULL_CONTROL"], "grants")
alice.put_object_acl(Bucket="tags", Key="d/k", ACL="public-read")
eq(code(alice.put_object_acl, Bucket="tags", Key="nope", ACL="private"), "NoSuchKey", "ACL of a missing object")
eq(code(bob.get_object_acl, Bucket="tags", Key="d/k"), "AccessDenied", "bob reads the ACL")
eq(code(alice.get_bucket_policy, Bucket="tags") in ("NoSuchBucketPolicy", "NotImplemented"), True, "bucket policy")
"#,
    );
}

#[test]
fn cors_configuration_preflights_and_actual_requests() {
    scenario(
        "cors",
        r#"
def options(path, origin, method, headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    req = urllib.request.Request(EP + path, method="OPTIONS", headers=h)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers

alice.create_bucket(Bucket="web")
eq(code(alice.get_bucket_cors, Bucket="web"), "NoSuchCORSConfiguration", "no configuration")
eq(options("/web/page.html", "https://app.example.com", "GET")[0], 403, "preflight without rules")

rules = {"CORSRules": [
    {"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]}]}
alice.put_bucket_cors(Bucket="web", CORSConfiguration=rules)
got = alice.get_bucket_cors(Bucket="web")["CORSRules"]
eq(len(got), 2, "rules")
eq(got[0]["AllowedOrigins"], ["https://*.example.com"], "origins")
eq(got[0]["AllowedMethods"], ["GET", "PUT"], "methods")
eq(got[0]["ExposeHeaders"], ["ETag"], "expose")
eq(got[0]["MaxAgeSeconds"], 600, "max age")
eq(code(alice.put_bucket_cors, Bucket="web", CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}), "InvalidRequest", "bad method")
eq(code(bob.put_bucket_cors, Bucket="web", CORSConfiguration=rules), "AccessDenied", "bob sets alice's CORS")

s, h = options("/web/page.html", "https://app.example.com", "PUT", "Content-Type, X-Amz-Date")
eq(s, 200, "allowed preflight")
eq(h.get("Access-Control-Allow-Origin"), "https://app.example.com", "allow origin")
eq("PUT" in h.get("Access-Control-Allow-Methods", ""), True, "allow methods")
eq(h.get("Access-Control-Max-Age"), "600", "max age header")
eq(options("/web", "https://app.example.com", "GET")[0], 200, "bucket preflight")
eq(options("/web/page.html", "https://evil.test", "GET")[0], 403, "other origin")
eq(options("/web/page.html", "https://app.example.com", "DELETE")[0], 403, "other method")
eq(options("/web/page.html", "https://app.example.com", "PUT", "x-secret")[0], 403, "other header")
s, h = options("/web/page.html", "https://evil.test", "HEAD")
eq((s, h.get("Access-Control-Allow-Origin")), (200, "*"), "wildcard rule")
eq(options("/nobucket/x", "https://app.example.com", "GET")[0], 404, "preflight to a missing bucket")

alice.put_object(Bucket="web", Key="page.html", Body=b"<p>hi</p>", ContentType="text/html")
url = alice.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "page.html"})
with urllib.request.urlopen(urllib.request.Request(url, headers={"Origin": "https://app.example.com"})) as r:
    eq(r.read(), b"<p>hi</p>", "GET body")
    eq(r.headers.get("Access-Control-Allow-Origin"), "https://app.example.com", "actual allow origin")
    eq(r.headers.get("Access-Control-Expose-Headers"), "ETag", "actual expose")
with urllib.request.urlopen(urllib.request.Request(url, headers={"Origin": "https://evil.test"})) as r:
    eq(r.headers.get("Access-Control-Allow-Origin"), None, "no rule for GET from evil.test")
with urllib.request.urlopen(url) as r:
    eq(r.headers.get("Access-Control-Allow-Origin"), None, "no Origin, no CORS headers")
# An error answer carries the headers too, so the page can read it.
missing = alice.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "gone.html"})
try:
    urllib.request.urlopen(urllib.request.Request(missing, headers={"Origin": "https://app.example.com"}))
    raise AssertionError("GET of a missing key succeeded")
except urllib.error.HTTPError as e:
    eq(e.code, 404, "missing key")
    eq(e.headers.get("Access-Control-Allow-Origin"), "https://app.example.com", "CORS headers on an error")
    eq(b"<Code>NoSuchKey</Code>" in e.read(), True, "the error body")

alice.delete_bucket_cors(Bucket="web")
eq(code(alice.get_bucket_cors, Bucket="web"), "NoSuchCORSConfiguration", "deleted")
eq(options("/web/page.html", "https://app.example.com", "GET")[0], 403, "preflight after delete")
"#,
    );
}

#[test]
fn browser_post_uploads_under_a_signed_policy() {
    scenario(
        "post",
        r#"
def post(fields, data, bucket="uploads", filename="photo.txt"):
    boundary = "kelpboundary%d" % time.time_ns()
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{EP}/{bucket}", data=out, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers

alice.create_bucket(Bucket="uploads")
conds = [["starts-with", "$key", "user/"], ["content-length-range", 1, 64],
         {"success_action_status": "201"}, ["starts-with", "$Content-Type", "text/"],
         {"x-amz-meta-kind": "note"}]
p = alice.generate_presigned_post("uploads", "user/${filename}",
    Fields={"success_action_status": "201", "Content-Type": "text/plain", "x-amz-meta-kind": "note"},
    Conditions=conds, ExpiresIn=300)
s, b, h = post(p["fields"], b"hello post")
eq(s, 201, b)
eq(b"<Key>user/photo.txt</Key>" in b and b"<Bucket>uploads</Bucket>" in b, True, b)
r = alice.get_object(Bucket="uploads", Key="user/photo.txt")
eq(body(r), b"hello post", "posted content")
eq(r["ContentType"], "text/plain", "content type")
eq(r["Metadata"], {"kind": "note"}, "metadata")

s, b, _ = post(p["fields"], b"x" * 65)
eq((s, b"EntityTooLarge" in b), (400, True), b)
eq(code(alice.head_object, Bucket="uploads", Key="user/big"), "404", "nothing stored")
s, b, _ = post(p["fields"], b"")
eq((s, b"EntityTooSmall" in b), (400, True), b)

f = dict(p["fields"])
pol = json.loads(base64.b64decode(f["policy"]))
for c in pol["conditions"]:
    if isinstance(c, list) and c[0] == "content-length-range":
        c[2] = 1 << 30
f["policy"] = base64.b64encode(json.dumps(pol).encode()).decode()
s, b, _ = post(f, b"x" * 100)
eq((s, b"SignatureDoesNotMatch" in b), (403, True), b)

f = dict(p["fields"])
f["key"] = "other/${filename}"
s, b, _ = post(f, b"abc")
eq((s, b"AccessDenied" in b), (403, True), b)

old = alice.generate_presigned_post("uploads", "user/${filename}", Conditions=[["starts-with", "$key", "user/"]], ExpiresIn=-60)
s, b, _ = post(old["fields"], b"abc")
eq((s, b"AccessDenied" in b and b"expired" in b), (403, True), b)

plain = alice.generate_presigned_post("uploads", "user/plain.bin", ExpiresIn=300)
s, b, h = post(plain["fields"], b"204 please")
eq((s, b), (204, b""), "default status")
eq(h.get("ETag") is not None, True, "etag header")
eq(body(alice.get_object(Bucket="uploads", Key="user/plain.bin")), b"204 please", "default-status content")

mine = bob.generate_presigned_post("uploads", "user/${filename}", Conditions=[["starts-with", "$key", "user/"]], ExpiresIn=300)
s, b, _ = post(mine["fields"], b"abc", filename="bob.txt")
eq((s, b"AccessDenied" in b), (403, True), b)
"#,
    );
}

#[test]
fn versioning_keeps_versions_and_delete_markers() {
    scenario(
        "versioning",
        r#"
alice.create_bucket(Bucket="plain")
r = alice.put_object(Bucket="plain", Key="k", Body=b"x")
eq("VersionId" in r, False, "an unversioned put has no version id")
eq(code(alice.get_object, Bucket="plain", Key="k", VersionId="0123456789abcdef01234567"), "NoSuchVersion", "no versions")

alice.create_bucket(Bucket="ver")
eq(alice.get_bucket_versioning(Bucket="ver").get("Status"), None, "never versioned")
alice.put_object(Bucket="ver", Key="old", Body=b"before")
alice.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
eq(alice.get_bucket_versioning(Bucket="ver")["Status"], "Enabled", "enabled")
eq(code(bob.put_bucket_versioning, Bucket="ver", VersioningConfiguration={"Status": "Suspended"}), "AccessDenied", "bob")

v1 = alice.put_object(Bucket="ver", Key="d/k", Body=b"one")["VersionId"]
v2 = alice.put_object(Bucket="ver", Key="d/k", Body=b"two")["VersionId"]
eq(v1 != v2 and "null" not in (v1, v2), True, f"ids {v1} {v2}")
r = alice.get_object(Bucket="ver", Key="d/k")
eq((body(r), r["VersionId"]), (b"two", v2), "latest")
r = alice.get_object(Bucket="ver", Key="d/k", VersionId=v1)
eq((body(r), r["VersionId"]), (b"one", v1), "v1 by id")
eq(alice.head_object(Bucket="ver", Key="d/k", VersionId=v1)["ContentLength"], 3, "head v1")

d = alice.delete_object(Bucket="ver", Key="d/k")
eq(d.get("DeleteMarker"), True, "marker")
m = d["VersionId"]
eq(code(alice.get_object, Bucket="ver", Key="d/k"), "NoSuchKey", "deleted")
eq(code(alice.get_object, Bucket="ver", Key="d/k", VersionId=m), "MethodNotAllowed", "get a marker")
eq("Contents" in alice.list_objects_v2(Bucket="ver", Prefix="d/"), False, "listing hides it")
lv = alice.list_object_versions(Bucket="ver", Prefix="d/")
eq([(v["VersionId"], v["IsLatest"], v["Size"]) for v in lv["Versions"]], [(v2, False, 3), (v1, False, 3)], "versions")
eq([(x["VersionId"], x["IsLatest"]) for x in lv["DeleteMarkers"]], [(m, True)], "markers")
eq(body(alice.get_object(Bucket="ver", Key="d/k", VersionId=v2)), b"two", "v2 by id")

d = alice.delete_object(Bucket="ver", Key="d/k", VersionId=m)
eq((d.get("DeleteMarker"), d["VersionId"]), (True, m), "marker removed")
r = alice.get_object(Bucket="ver", Key="d/k")
eq((body(r), r["VersionId"]), (b"two", v2), "v2 current again")

alice.delete_object(Bucket="ver", Key="d/k", VersionId=v1)
eq(code(alice.get_object, Bucket="ver", Key="d/k", VersionId=v1), "NoSuchVersion", "v1 gone")
lv = alice.list_object_versions(Bucket="ver", Prefix="d/")
eq([(v["VersionId"], v["IsLatest"]) for v in lv["Versions"]], [(v2, True)], "only v2")
eq("DeleteMarkers" in lv, False, "no markers")
alice.delete_object(Bucket="ver", Key="d/k", VersionId=v2)
eq("Versions" in alice.list_object_versions(Bucket="ver", Prefix="d/"), False, "all gone")

# The object from before versioning is the null version.
v = alice.put_object(Bucket="ver", Key="old", Body=b"after")["VersionId"]
eq(body(alice.get_object(Bucket="ver", Key="old", VersionId="null")), b"before", "null version kept")
c = alice.copy_object(Bucket="ver", Key="copy", CopySource={"Bucket": "ver", "Key": "old", "VersionId": "null"})
eq(body(alice.get_object(Bucket="ver", Key="copy", VersionId=c["VersionId"])), b"before", "copy of a version")

# Multipart completion keeps the replaced object too.
mp = alice.create_multipart_upload(Bucket="ver", Key="old")
part = alice.upload_part(Bucket="ver", Key="old", UploadId=mp["UploadId"], PartNumber=1, Body=b"multi")
done = alice.complete_multipart_upload(Bucket="ver", Key="old", UploadId=mp["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
eq(body(alice.get_object(Bucket="ver", Key="old")), b"multi", "multipart current")
eq(body(alice.get_object(Bucket="ver", Key="old", VersionId=v)), b"after", "replaced by multipart")
alice.copy_object(Bucket="ver", Key="old", CopySource={"Bucket": "ver", "Key": "old", "VersionId": v})
eq(body(alice.get_object(Bucket="ver", Key="old")), b"after", "a version restored by copying it onto its key")

# Order: keys, then newest first; paging with key and version markers.
for i in range(3):
    alice.put_object(Bucket="ver", Key="a", Body=str(i).encode())
alice.delete_object(Bucket="ver", Key="a")
seen = []
for page in alice.get_paginator("list_object_versions").paginate(Bucket="ver", PaginationConfig={"PageSize": 2}):
    for x in page.get("Versions", []) + page.get("DeleteMarkers", []):
        seen.append((x["Key"], x["LastModified"], x["VersionId"], x["IsLatest"]))
full = alice.list_object_versions(Bucket="ver")
allv = full.get("Versions", []) + full.get("DeleteMarkers", [])
eq(len(seen), len(allv), "paging saw every version")
eq(len(set(x[2] + x[0] for x in seen)), len(seen), "no version twice")
keys = [x[0] for x in seen]
eq(keys, sorted(keys), "key order")
a = [x for x in seen if x[0] == "a"]
eq(len(a), 4, "a's versions")
eq([x[3] for x in sorted(a, key=lambda x: x[1], reverse=True)][0], True, "newest is latest")
eq(sum(1 for x in seen if x[3]), 3, "one latest per key")

# Suspended: writes replace the null version.
alice.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Suspended"})
eq(alice.get_bucket_versioning(Bucket="ver")["Status"], "Suspended", "suspended")
alice.put_object(Bucket="ver", Key="s", Body=b"s1")
alice.put_object(Bucket="ver", Key="s", Body=b"s2")
lv = alice.list_object_versions(Bucket="ver", Prefix="s")
eq([(x["VersionId"], x["IsLatest"]) for x in lv["Versions"]], [("null", True)], "one null version")
eq(body(alice.get_object(Bucket="ver", Key="s")), b"s2", "replaced")

eq(code(bob.list_object_versions, Bucket="ver"), "AccessDenied", "bob lists versions")
eq(code(bob.get_object, Bucket="ver", Key="old", VersionId=v), "AccessDenied", "bob reads a version")
eq(code(bob.delete_object, Bucket="ver", Key="old", VersionId=v), "AccessDenied", "bob deletes a version")

# A bucket holding only old versions and delete markers is not empty.
alice.create_bucket(Bucket="ver2")
alice.put_bucket_versioning(Bucket="ver2", VersioningConfiguration={"Status": "Enabled"})
alice.put_object(Bucket="ver2", Key="deep/k", Body=b"1")
alice.put_object(Bucket="ver2", Key="deep/k", Body=b"2")
alice.delete_object(Bucket="ver2", Key="deep/k")
eq(alice.list_objects_v2(Bucket="ver2")["KeyCount"], 0, "no current object")
eq(code(alice.delete_bucket, Bucket="ver2"), "BucketNotEmpty", "versions keep a bucket")
for x in alice.list_object_versions(Bucket="ver2").get("Versions", []) + alice.list_object_versions(Bucket="ver2").get("DeleteMarkers", []):
    alice.delete_object(Bucket="ver2", Key=x["Key"], VersionId=x["VersionId"])
eq(alice.list_object_versions(Bucket="ver2").get("Versions", []), [], "every version removed")
alice.delete_bucket(Bucket="ver2")
eq(code(alice.head_bucket, Bucket="ver2"), "404", "bucket gone")
"#,
    );
}

#[test]
fn users_cannot_touch_each_others_private_buckets() {
    scenario(
        "access",
        r#"
alice.create_bucket(Bucket="private")
alice.put_object(Bucket="private", Key="k", Body=b"secret")
eq(code(bob.get_object, Bucket="private", Key="k"), "AccessDenied", "bob reads")
eq(code(bob.put_object, Bucket="private", Key="x", Body=b"x"), "AccessDenied", "bob writes")
eq(code(bob.list_objects_v2, Bucket="private"), "AccessDenied", "bob lists")
eq(code(bob.delete_object, Bucket="private", Key="k"), "AccessDenied", "bob deletes")
eq(code(bob.put_object_acl, Bucket="private", Key="k", ACL="public-read"), "AccessDenied", "bob opens it")
eq(code(bob.get_bucket_cors, Bucket="private"), "AccessDenied", "bob reads CORS")
eq([b["Name"] for b in bob.list_buckets()["Buckets"]], [], "bob's buckets")

alice.create_bucket(Bucket="public", ACL="public-read")
alice.put_object(Bucket="public", Key="k", Body=b"open")
eq(body(bob.get_object(Bucket="public", Key="k")), b"open", "bob reads a public-read bucket")
eq([o["Key"] for o in bob.list_objects_v2(Bucket="public")["Contents"]], ["k"], "bob lists it")
eq(code(bob.put_object, Bucket="public", Key="x", Body=b"x"), "AccessDenied", "but may not write")
eq(body(alice.get_object(Bucket="private", Key="k")), b"secret", "alice still reads hers")

# An object's own ACL opens it in a private bucket; the others stay shut.
alice.put_object(Bucket="private", Key="shared", Body=b"for all", ACL="public-read")
alice.put_object(Bucket="private", Key="members", Body=b"for users", ACL="authenticated-read")
eq(body(bob.get_object(Bucket="private", Key="shared")), b"for all", "bob reads a public-read object")
eq(bob.head_object(Bucket="private", Key="shared")["ContentLength"], 7, "and heads it")
eq(body(bob.get_object(Bucket="private", Key="members")), b"for users", "bob reads an authenticated-read object")
def anonymous(key):
    try:
        with urllib.request.urlopen(f"{EP}/private/{key}") as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
eq(anonymous("shared"), (200, b"for all"), "anonymous reads a public-read object")
eq(anonymous("members")[0], 403, "anonymous may not read an authenticated-read object")
eq(anonymous("k")[0], 403, "nor a private one")
eq(anonymous("no-such-key")[0], 403, "nor learn what does not exist")
eq(code(bob.get_object, Bucket="private", Key="k"), "AccessDenied", "bob still cannot read the private one")
eq(code(bob.put_object, Bucket="private", Key="shared", Body=b"x"), "AccessDenied", "a public-read object is not writable")
grants = alice.get_object_acl(Bucket="private", Key="shared")["Grants"]
eq(sorted((g["Grantee"].get("URI", g["Grantee"].get("ID")), g["Permission"]) for g in grants),
   [("alice", "FULL_CONTROL"), ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")], "public-read grants")
alice.put_object_acl(Bucket="private", Key="shared", ACL="private")
eq(code(bob.get_object, Bucket="private", Key="shared"), "AccessDenied", "shut again")
eq(len(alice.get_object_acl(Bucket="private", Key="shared")["Grants"]), 1, "the owner's grant only")
"#,
    );
}
