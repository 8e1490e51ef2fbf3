"""mammo-workbook: shared code for the RSNA screening-mammography notebooks."""
__version__ = "0.1.0"
