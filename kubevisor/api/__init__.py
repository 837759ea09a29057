"""kubevirt.io/v1 and core/v1 types, defaulting and validation (pure logic)."""
