"""Explore: what a person looks at: EDA tables, figures, the patient viewer and the mistake browser."""
