"""Fake-image detection, after a Dream AI Smart Device Hackathon (LG Challenge) report on fake-image generation
and detection: an ALAE generator makes fakes; a small CNN trained on real vs ALAE images, with blur + JPEG
augmentation, detects them (Wang et al. 2020's recipe) on the shared core."""
