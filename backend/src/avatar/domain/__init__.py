"""Domain layer: entities, value objects and pure rules. No I/O, no framework imports."""
