"""Benchmark scripts (python -m bench.NAME); each prints its table and writes its figures as JSON."""

# the sample listener requests the speed benchmarks send (cycled to the batch or request count)
REQUESTS = ["play some 90s rock for a road trip", "chill lofi beats to study to", "upbeat latin pop for a party",
            "sad songs from the 2000s", "energetic edm for the gym", "classic hip hop from the 90s",
            "acoustic songs for a rainy sunday", "r&b slow jams"]
