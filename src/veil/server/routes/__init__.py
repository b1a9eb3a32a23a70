"""HTTP routes: thin — validate at the boundary, delegate to the parts."""
