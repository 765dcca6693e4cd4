"""Sources, vocabularies, interaction data and evaluation splits."""
