//! Conformance case for paged prefix reads: [`drover_store::Store::list`]
//! and `list_skydns` over more records than one range response may carry
//! (the gRPC client's 4 MiB limit), at one revision.

use anyhow::{ensure, Result};
use drover_store::{Kind, Store};
use etcd_client::{Txn, TxnOp};

use super::client;

const PREFIX: &str = "/paged/";
/// Records written: 2,345 of about 3 KB, over 7 MB in all.
const RECORDS: usize = 2345;

pub(crate) async fn typed_list_reads_many_pages_at_one_revision(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    let pad = "x".repeat(3000);
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(60) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .flat_map(|&i| {
                let value = serde_json::to_vec(&serde_json::json!({ "i": i, "pad": pad })).unwrap();
                [
                    TxnOp::put(format!("{PREFIX}allocs/a{i:05}"), value, None),
                    TxnOp::put(format!("/skydns/paged/a{i:05}"), "{}", None),
                ]
            })
            .collect();
        c.txn(Txn::new().and_then(ops)).await?;
    }
    // A single range read of the lot is over the client's limit: this is
    // what paging is for.
    let whole = c
        .get(
            format!("{PREFIX}allocs/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await;
    ensure!(whole.is_err(), "one range read of 7 MB should be refused");
    let written = c.get("any", None).await?.header().unwrap().revision();

    for page in [drover_store::client::LIST_PAGE, 7] {
        let store = Store::connect(ep, PREFIX).await?.with_list_page(page);
        let listing = store.list::<serde_json::Value>(Kind::Alloc).await?;
        ensure!(
            listing.items.len() == RECORDS,
            "page {page}: {} records",
            listing.items.len()
        );
        for (i, item) in listing.items.iter().enumerate() {
            ensure!(
                item.name == format!("a{i:05}"),
                "page {page}: {i} is {}",
                item.name
            );
            ensure!(
                item.value["i"] == i,
                "page {page}: {i} holds {}",
                item.value["i"]
            );
        }
        ensure!(
            listing.revision == written,
            "read at {} after {written}",
            listing.revision
        );
        let raw = store.list_skydns("/skydns/paged/").await?;
        ensure!(
            raw.len() == RECORDS,
            "page {page}: {} skydns keys",
            raw.len()
        );
    }

    // Pages read after a later write still show the first page's revision.
    let store = Store::connect(ep, PREFIX).await?.with_list_page(1000);
    let before = store.list::<serde_json::Value>(Kind::Alloc).await?;
    c.put(format!("{PREFIX}allocs/a00000"), "{\"i\":-1}", None)
        .await?;
    c.put(format!("{PREFIX}allocs/zzz"), "{\"i\":-2}", None)
        .await?;
    let after = store.list::<serde_json::Value>(Kind::Alloc).await?;
    ensure!(before.items.len() == RECORDS && after.items.len() == RECORDS + 1);
    ensure!(after.items[0].value["i"] == -1 && after.revision == before.revision + 2);
    Ok(())
}
