"""Voice metrics of recordings: streaming decode, voice activity detection, talk/silence metrics."""
