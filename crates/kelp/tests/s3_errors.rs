//! The S3 gateway refuses bad input with S3's error codes and changes
//! nothing: wrong keys, a bad signature, an expired presigned URL,
//! malformed CompleteMultipartUpload XML, parts out of order, a missing
//! part, a part too small, an invalid bucket name, a key over 1024 bytes;
//! and a second user cannot read, write or list another's private bucket.
//! Driven by boto3, as applications do.

mod common;

use std::process::Command;

use common::*;

const IDS: &str = r#"{"identities":[
  {"name":"alice","credentials":[{"accessKey":"AKALICE","secretKey":"alice-secret"}],"actions":["Read","Write","List","Tagging"]},
  {"name":"bob","credentials":[{"accessKey":"AKBOB","secretKey":"bob-secret"}],"actions":["Read","Write","List"]}]}"#;

const SCRIPT: &str = r#"
import sys, time, urllib.request, urllib.error
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

url = sys.argv[1]
def client(ak, sk, **kw):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=ak, aws_secret_access_key=sk,
                        region_name="us-east-1",
                        config=Config(signature_version="s3v4", retries={"max_attempts": 1}, **kw))
alice = client("AKALICE", "alice-secret")
bob = client("AKBOB", "bob-secret")

def code_of(f):
    try:
        f()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "OK"

def expect(what, code, f):
    got = code_of(f)
    if got != code:
        print(f"FAIL {what}: wanted {code}, got {got}")
        sys.exit(1)
    print(f"ok   {what}: {code}")

alice.create_bucket(Bucket="files")
alice.put_object(Bucket="files", Key="keep.txt", Body=b"keep")

# Authentication.
expect("unknown access key", "InvalidAccessKeyId", lambda: client("NOPE", "x").list_buckets())
expect("wrong secret", "SignatureDoesNotMatch", lambda: client("AKALICE", "wrong").put_object(Bucket="files", Key="x", Body=b"x"))
expect("wrong secret changes nothing", "NoSuchKey", lambda: alice.get_object(Bucket="files", Key="x"))

# Presigned URLs: one that works, one expired.
good = alice.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "keep.txt"}, ExpiresIn=60)
assert urllib.request.urlopen(good).read() == b"keep", "presigned GET"
old = alice.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "keep.txt"}, ExpiresIn=1)
time.sleep(2)
try:
    urllib.request.urlopen(old)
    print("FAIL expired presign was served"); sys.exit(1)
except urllib.error.HTTPError as e:
    body = e.read().decode()
    assert e.code == 403 and "AccessDenied" in body and "expired" in body, (e.code, body)
    print("ok   expired presign: 403 AccessDenied")

# Names.
expect("invalid bucket name", "InvalidBucketName", lambda: alice.create_bucket(Bucket="Bad_Name"))
expect("key over 1024 bytes", "KeyTooLongError", lambda: alice.put_object(Bucket="files", Key="k" * 1025, Body=b"x"))
expect("missing bucket", "NoSuchBucket", lambda: alice.put_object(Bucket="nobucket", Key="k", Body=b"x"))
expect("bucket not empty", "BucketNotEmpty", lambda: alice.delete_bucket(Bucket="files"))

# Multipart refusals leave the upload as it was.
up = alice.create_multipart_upload(Bucket="files", Key="big")["UploadId"]
p1 = alice.upload_part(Bucket="files", Key="big", UploadId=up, PartNumber=1, Body=b"a" * (5 << 20))["ETag"]
p2 = alice.upload_part(Bucket="files", Key="big", UploadId=up, PartNumber=2, Body=b"b" * 100)["ETag"]
parts = lambda *ps: {"Parts": [{"PartNumber": n, "ETag": e} for n, e in ps]}
expect("parts out of order", "InvalidPartOrder", lambda: alice.complete_multipart_upload(Bucket="files", Key="big", UploadId=up, MultipartUpload=parts((2, p2), (1, p1))))
expect("missing part", "InvalidPart", lambda: alice.complete_multipart_upload(Bucket="files", Key="big", UploadId=up, MultipartUpload=parts((1, p1), (3, p2))))
expect("wrong part ETag", "InvalidPart", lambda: alice.complete_multipart_upload(Bucket="files", Key="big", UploadId=up, MultipartUpload=parts((1, p2), (2, p2))))
small = alice.upload_part(Bucket="files", Key="big", UploadId=up, PartNumber=3, Body=b"c" * 100)["ETag"]
expect("part too small", "EntityTooSmall", lambda: alice.complete_multipart_upload(Bucket="files", Key="big", UploadId=up, MultipartUpload=parts((2, p2), (3, small))))
expect("no object after refusals", "NoSuchKey", lambda: alice.get_object(Bucket="files", Key="big"))
listed = alice.list_parts(Bucket="files", Key="big", UploadId=up)["Parts"]
assert [p["PartNumber"] for p in listed] == [1, 2, 3], listed
# Malformed XML, sent raw with a valid signature.
def malformed():
    req = {"Bucket": "files", "Key": "big", "UploadId": up}
    def swap(request, **kw):
        request.data = b"<CompleteMultipartUpload><Part><PartNumber>1</Part>"
        for h in ("Content-MD5", "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm"):
            if h in request.headers:
                del request.headers[h]
    alice.meta.events.register_first("before-sign.s3.CompleteMultipartUpload", swap)
    try:
        alice.complete_multipart_upload(MultipartUpload=parts((1, p1)), **req)
    finally:
        alice.meta.events.unregister("before-sign.s3.CompleteMultipartUpload", swap)
expect("malformed Complete XML", "MalformedXML", malformed)
expect("unknown upload", "NoSuchUpload", lambda: alice.upload_part(Bucket="files", Key="big", UploadId="0" * 32, PartNumber=1, Body=b"x"))
r = alice.complete_multipart_upload(Bucket="files", Key="big", UploadId=up, MultipartUpload=parts((1, p1), (2, p2)))
assert r["ETag"].endswith('-2"'), r["ETag"]
body = alice.get_object(Bucket="files", Key="big")["Body"].read()
assert body == b"a" * (5 << 20) + b"b" * 100, "assembled object"
expect("upload is gone after completion", "NoSuchUpload", lambda: alice.list_parts(Bucket="files", Key="big", UploadId=up))
print("ok   multipart completed after the refusals")

# A second user and a private bucket.
expect("bob reads alice's object", "AccessDenied", lambda: bob.get_object(Bucket="files", Key="keep.txt"))
expect("bob writes alice's bucket", "AccessDenied", lambda: bob.put_object(Bucket="files", Key="b", Body=b"x"))
expect("bob lists alice's bucket", "AccessDenied", lambda: bob.list_objects_v2(Bucket="files"))
expect("bob deletes alice's object", "AccessDenied", lambda: bob.delete_object(Bucket="files", Key="keep.txt"))
names = [b["Name"] for b in bob.list_buckets()["Buckets"]]
assert "files" not in names, names
bob.create_bucket(Bucket="bobs")
assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == ["bobs"]
alice.put_bucket_acl(Bucket="files", ACL="public-read")
assert bob.get_object(Bucket="files", Key="keep.txt")["Body"].read() == b"keep"
expect("public-read is not writable", "AccessDenied", lambda: bob.put_object(Bucket="files", Key="b", Body=b"x"))
assert alice.get_object(Bucket="files", Key="keep.txt")["Body"].read() == b"keep"
print("ALL OK")
"#;

#[test]
fn bad_input_gets_s3_errors_and_changes_nothing() {
    let Some(python) = require_tool("python3 with boto3", boto3()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, IDS).unwrap();
    let cfg = format!("-s3.config={}", ids.display());
    let k = kelp_server(
        &tmp.path().join("data"),
        &["-s3", "-s3.port=0", "-filer.port=0", cfg.as_str()],
    );
    let url = format!("http://127.0.0.1:{}", k.port("s3_port"));
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&url)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
}

/// python3, when it can import boto3.
fn boto3() -> Option<std::path::PathBuf> {
    let p = which("python3")?;
    let ok = Command::new(&p)
        .args(["-c", "import boto3"])
        .status()
        .ok()?
        .success();
    ok.then_some(p)
}
