"""One module per KPI of KPI.md. The dashboard, the CSV export and /api/v1/metrics/
all go through `metrics.report`, which calls these modules."""
