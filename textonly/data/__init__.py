"""Datasets: the one on-disk layout, the one image loader, and real data brought into the layout."""
