"""Every command of ``hotspare`` and the one admin client."""
