"""The one settings object (`config.settings.Settings`: every `HAPVR_*` environment variable) and the input
limits it carries. Neutral ground: `indexer/`, `service/`, `bench/` and `demo/` read it; it imports only
`model/`'s encoder configuration, never a layer above."""
