"""Datasets for the course. ``shapes`` works offline: a stand-in for COCO, drawn on the fly."""
