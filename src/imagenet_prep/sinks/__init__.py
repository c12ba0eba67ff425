"""Writers of the output layouts: class trees, flat folders, synsets, box CSV, TFRecords."""
