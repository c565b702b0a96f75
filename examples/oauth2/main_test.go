package main

import (
	"context"
	"testing"
)

// The adapter serves the cached token until asked to refresh, then skips
// the cache: what mailer needs after the server rejects a token.
func TestTokenSourceAdapter(t *testing.T) {
	p := &provider{}
	ts := tokenSource(p)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if tok, _ := ts.Token(ctx, false); tok != "revoked-token" || p.issued != 1 {
			t.Fatalf("cached call %d: %q after %d issued", i, tok, p.issued)
		}
	}
	if tok, _ := ts.Token(ctx, true); tok != "fresh-token" || p.issued != 2 {
		t.Fatalf("refresh: %q after %d issued", tok, p.issued)
	}
}
