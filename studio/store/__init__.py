"""The SQLite file: the Store (connection, WAL, conversations, messages, usage ledger), its
migrations, and the per-feature tables (images, cloud models and arena runs, model hygiene).
The only place that writes SQL. No gradio imports."""
