//! `drover node images NODE`: the images and layers in a node's cache,
//! with sizes and last use, asked of its agent through the scheduler
//! (`NodeService.Images`).

use anyhow::Result;
use drover_proto::v1 as pb;
use serde_json::{json, Value};

use crate::columns::{age, table};
use crate::connect::{channel, status_error};
use crate::{output, ClientOpts, Output};

/// `12.3 MB`.
fn size(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The first 12 hex digits of a `sha256:` digest.
fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// The listing as one JSON document (stable field names).
pub fn images_json(r: &pb::NodeImagesResponse) -> Value {
    json!({
        "node_id": r.node_id,
        "images": r.images.iter().map(|i| json!({
            "names": i.names,
            "pinned": i.pinned,
            "manifest": i.manifest,
            "size_bytes": i.size_bytes,
            "last_used_unix_ms": i.last_used_unix_ms,
            "layers": i.layers,
            "in_use": i.in_use,
        })).collect::<Vec<_>>(),
        "layers": r.layers.iter().map(|l| json!({
            "digest": l.digest,
            "size_bytes": l.size_bytes,
            "used_by": l.used_by,
            "last_used_unix_ms": l.last_used_unix_ms,
            "in_use": l.in_use,
        })).collect::<Vec<_>>(),
    })
}

fn print_tables(r: &pb::NodeImagesResponse, now_ms: i64) {
    table(
        &["IMAGE", "DIGEST", "SIZE", "LAST USED", "IN USE"],
        r.images
            .iter()
            .map(|i| {
                vec![
                    if i.names.is_empty() {
                        i.pinned.clone()
                    } else {
                        i.names.join(", ")
                    },
                    short(&i.manifest),
                    size(i.size_bytes),
                    age(now_ms, i.last_used_unix_ms),
                    yes_no(i.in_use),
                ]
            })
            .collect(),
    );
    outln!();
    table(
        &["LAYER", "SIZE", "IMAGES", "LAST USED", "IN USE"],
        r.layers
            .iter()
            .map(|l| {
                vec![
                    short(&l.digest),
                    size(l.size_bytes),
                    l.used_by
                        .iter()
                        .map(|m| short(m))
                        .collect::<Vec<_>>()
                        .join(","),
                    age(now_ms, l.last_used_unix_ms),
                    yes_no(l.in_use),
                ]
            })
            .collect(),
    );
}

/// Prints node `id`'s image cache.
pub async fn node_images(opts: &ClientOpts, id: &str) -> Result<()> {
    let mut client = pb::node_service_client::NodeServiceClient::new(channel(opts).await?)
        .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let r = client
        .images(pb::NodeImagesRequest { id: id.to_owned() })
        .await
        .map_err(status_error)?
        .into_inner();
    match opts.output {
        Output::Json => output::json(&images_json(&r)),
        Output::Table => print_tables(&r, crate::queued::now_ms()),
    }
    Ok(())
}
