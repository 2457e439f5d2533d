//! Files too large for one upload: the data is cut into chunks, each
//! assigned and uploaded as its own file, then a chunk manifest naming
//! them (the volume server's format, `{"name","mime","size","chunks":
//! [{"fid","offset","size"}]}`) is uploaded with `cm=true`. Reading the
//! manifest's fid returns the whole file and deleting it deletes the
//! chunks; the volume server does both.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::client::Client;
use crate::error::{ClientError, Op};
use crate::master::AssignRequest;
use crate::volume::UploadOptions;

/// How a chunked file is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedOptions {
    /// Bytes per chunk (the last may be shorter); at least 1.
    pub chunk_size: usize,
    /// File name and MIME type, kept in the manifest.
    pub name: String,
    pub mime: String,
    /// Where chunks and manifest go (collection, replication, TTL…).
    pub assign: AssignRequest,
    pub fsync: bool,
}

impl Default for ChunkedOptions {
    fn default() -> Self {
        Self {
            chunk_size: 8 << 20,
            name: String::new(),
            mime: String::new(),
            assign: AssignRequest::default(),
            fsync: false,
        }
    }
}

/// A stored chunked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedUpload {
    /// The manifest's fid: read and delete the file through it.
    pub fid: String,
    /// Bytes of the file.
    pub size: u64,
    /// Fids of the chunks, in file order.
    pub chunks: Vec<String>,
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    name: &'a str,
    mime: &'a str,
    size: u64,
    chunks: Vec<ChunkJson<'a>>,
}

#[derive(Serialize)]
struct ChunkJson<'a> {
    fid: &'a str,
    offset: u64,
    size: u64,
}

impl Client {
    /// Stores the bytes of `data` as a chunked file, holding at most one
    /// chunk in memory. On failure the chunks already stored are deleted
    /// (best effort) and the error says which step failed.
    pub async fn upload_chunked<S>(
        &self,
        data: S,
        opts: &ChunkedOptions,
    ) -> Result<ChunkedUpload, ClientError>
    where
        S: Stream<Item = std::io::Result<Bytes>>,
    {
        let mut chunks: Vec<(String, u64)> = Vec::new();
        let result = self.store_chunks(data, opts, &mut chunks).await;
        let result = match result {
            Ok(()) => self.store_manifest(opts, &chunks).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            for (fid, _) in &chunks {
                if let Err(e) = self.delete(fid).await {
                    tracing::warn!(fid, error = %e, "could not delete a chunk of a failed upload");
                }
            }
        }
        result
    }

    /// Uploads `data` chunk by chunk, recording each in `chunks`.
    async fn store_chunks<S>(
        &self,
        data: S,
        opts: &ChunkedOptions,
        chunks: &mut Vec<(String, u64)>,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = std::io::Result<Bytes>>,
    {
        let size = opts.chunk_size.max(1);
        let mut data = std::pin::pin!(data);
        let mut pending = BytesMut::new();
        let mut ended = false;
        while !ended {
            while pending.len() < size {
                match data.next().await {
                    Some(Ok(b)) => pending.extend_from_slice(&b),
                    Some(Err(error)) => {
                        return Err(ClientError::Source {
                            op: Op::UploadChunked(opts.name.clone()),
                            error,
                        });
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            while pending.len() >= size || (ended && !pending.is_empty()) {
                let take = pending.len().min(size);
                let chunk = pending.split_to(take).freeze();
                let fid = self.store_chunk(chunk, opts).await?;
                chunks.push((fid, take as u64));
            }
        }
        Ok(())
    }

    async fn store_chunk(
        &self,
        chunk: Bytes,
        opts: &ChunkedOptions,
    ) -> Result<String, ClientError> {
        let a = self.assign(&opts.assign).await?;
        let upload = UploadOptions {
            fsync: opts.fsync,
            ttl: opts.assign.ttl.clone(),
            ..UploadOptions::default()
        };
        self.upload(&a, chunk, &upload).await?;
        Ok(a.fid)
    }

    async fn store_manifest(
        &self,
        opts: &ChunkedOptions,
        chunks: &[(String, u64)],
    ) -> Result<ChunkedUpload, ClientError> {
        let mut offset = 0;
        let mut entries = Vec::with_capacity(chunks.len());
        for (fid, size) in chunks {
            entries.push(ChunkJson {
                fid,
                offset,
                size: *size,
            });
            offset += size;
        }
        let manifest = ManifestJson {
            name: &opts.name,
            mime: &opts.mime,
            size: offset,
            chunks: entries,
        };
        let json = serde_json::to_vec(&manifest).map_err(|e| ClientError::Invalid {
            op: Op::UploadChunked(opts.name.clone()),
            reason: format!("manifest: {e}"),
        })?;
        let a = self.assign(&opts.assign).await?;
        let upload = UploadOptions {
            name: opts.name.clone(),
            mime: "application/json".to_string(),
            fsync: opts.fsync,
            ttl: opts.assign.ttl.clone(),
            chunk_manifest: true,
        };
        self.upload(&a, json, &upload).await?;
        Ok(ChunkedUpload {
            fid: a.fid,
            size: offset,
            chunks: chunks.iter().map(|(f, _)| f.clone()).collect(),
        })
    }
}
