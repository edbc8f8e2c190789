package operators

// TokenLookup is the per-request query, for its plan test.
const TokenLookup = tokenLookup
