-- Dead letters keep the record's bytes exactly, up to a cap (docs/semantics.md, "Dead letters").
-- The job sends the first 64 KiB of the record (base64, so bytes that are not UTF-8 survive) and
-- the record's whole size; the loader stores the bytes in `payload` and the size here.
-- `payload_truncated` says whether `payload` is only the beginning of the record. Rows loaded
-- before this migration carried the whole record as text: their size is their payload's length.
ALTER TABLE dead_letters ADD COLUMN payload_size UInt32 DEFAULT length(payload) AFTER payload;
ALTER TABLE dead_letters ADD COLUMN payload_truncated Bool ALIAS payload_size > length(payload) AFTER payload_size;
