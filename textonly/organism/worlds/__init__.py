"""The two synthetic worlds (wings, heritage): vocabulary, rendering, text, and the build."""
