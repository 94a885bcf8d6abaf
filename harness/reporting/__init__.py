"""From stored rows to what people read: aggregates, ranks, figures, pages, the site, comparisons."""
