//! Per-table figures of a store's index (entries, tree height, pages,
//! stored and fragmented bytes, from redb's table stats):
//! `cargo run --release --example index_tables -- DIR/index.redb`.
//! Open it only while no store has the directory open. The table types
//! are the ones `src/index/mod.rs` defines (format 9); a table an older
//! format lacks is listed as absent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use redb::{Key, ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableDefinition, Value};

fn show<K: Key + 'static, V: Value + 'static>(r: &ReadTransaction, name: &str) {
    let def: TableDefinition<K, V> = TableDefinition::new(name);
    let t = match r.open_table(def) {
        Err(redb::TableError::TableDoesNotExist(_)) => {
            println!("{name:<14} absent");
            return;
        }
        other => other.unwrap(),
    };
    let s = t.stats().unwrap();
    println!(
        "{name:<14} {:>10} {:>6} {:>10} {:>8} {:>12} {:>12}",
        t.len().unwrap(),
        s.tree_height(),
        s.leaf_pages(),
        s.branch_pages(),
        s.stored_bytes(),
        s.fragmented_bytes()
    );
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: index_tables DIR/index.redb");
    let db = redb::Database::open(&path).unwrap();
    let r = db.begin_read().unwrap();
    println!(
        "{:<14} {:>10} {:>6} {:>10} {:>8} {:>12} {:>12}",
        "table", "entries", "height", "leaf pages", "branches", "stored B", "fragmented B"
    );
    show::<&[u8], u64>(&r, "session_ids");
    show::<u64, &[u8]>(&r, "sessions");
    show::<[u8; 32], &[u8]>(&r, "turns");
    show::<&[u8], &[u8]>(&r, "session_runs");
    show::<[u8; 16], u64>(&r, "trace_homes");
    show::<[u8; 24], &[u8]>(&r, "home_runs");
    show::<u64, &[u8]>(&r, "trace_records");
    show::<[u8; 12], &[u8]>(&r, "search");
    show::<[u8; 20], &[u8]>(&r, "search_runs");
    show::<u64, u64>(&r, "segment_live");
    println!("file: {} B", std::fs::metadata(&path).unwrap().len());
}
