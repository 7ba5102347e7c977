"""Docker labels every range resource carries, so `down` removes exactly it."""

MANAGED = "io.rangectl.managed"
RANGE = "io.rangectl.range"
TEAM = "io.rangectl.team"
NODE = "io.rangectl.node"
NETWORK = "io.rangectl.network"
SCENARIO = "io.rangectl.scenario"
SCENARIO_HASH = "io.rangectl.scenario-hash"
ROLE = "io.rangectl.role"
IMAGE_RECIPE = "io.rangectl.image-recipe"
STAMP = "io.rangectl.stamp"  # the stamp a node was created from (docs/ranges.md, "Stamps")
