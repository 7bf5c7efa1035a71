"""Import and export of real-world formats.

Parsers turn a source into an :class:`~veml.formats.batch.ImportBatch` (Arrow tables, no ids yet)
and validate everything before anything is written, so bad input leaves the repository unchanged.
Exporters write a checked-out version back out.  Nothing here touches the stores.
"""

#: what ``veml data import FORMAT`` accepts (here, not in the parsers: the CLI builds its parser without them)
IMPORT_FORMATS = ("coco", "images", "table", "timeseries", "yolo", "voc", "hf", "bdd")
#: what ``veml data export --format`` writes
EXPORT_FORMATS = ("coco", "images", "yolo", "voc", "hf", "bdd")
