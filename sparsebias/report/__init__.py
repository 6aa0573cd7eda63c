"""Reports: JSON for machines, Markdown for people, PNG where a picture says it better."""
