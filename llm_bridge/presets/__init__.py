"""The bridge's named presets, TOML tables of :class:`llm_bridge.config.BridgeConfig` keys (package data)."""
