"""Users: the upsert, linking and soft-delete rules shared by login, webhooks and backfill."""
