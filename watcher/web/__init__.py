"""`cctv-gender serve`: the operators' dashboard, review pages and JSON API over the results store."""
