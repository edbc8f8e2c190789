package app

import "testing"

// Anonymous clients keep every right only where nobody else can connect.
func TestAnonymousOnlyOnLoopback(t *testing.T) {
	for listen, want := range map[string]bool{
		"": true, "off": true, "127.0.0.1:4222": true, "localhost:4222": true, "[::1]:4222": true, "127.0.0.1:-1": true,
		"0.0.0.0:4222": false, ":4222": false, "192.168.1.10:4222": false, "[::]:4222": false, "nonsense": false,
	} {
		if got := loopbackOnly(listen); got != want {
			t.Errorf("loopbackOnly(%q) = %v, want %v", listen, got, want)
		}
	}
	a := New(Defaults(), nil)
	a.Config.NATS.Token = "legacy"
	n, err := a.prepareNATSAuth()
	if err != nil || !n.enforced || n.policy.AllowAnonymous || n.policy.SharedToken != "legacy" || n.keys.XKey != nil {
		t.Fatalf("embedded with a token: %+v %v", n, err)
	}
	if w := n.warnings(); len(w) != 1 || w[0] != "shared agent token in use" {
		t.Fatalf("warnings %v", w)
	}
	a.Config.NATS.Token, a.Config.NATS.Listen = "", "0.0.0.0:4222"
	if n, _ = a.prepareNATSAuth(); n.policy.AllowAnonymous || len(n.warnings()) != 0 {
		t.Fatalf("embedded on the network without a token: %+v", n.policy)
	}
	a.Config.NATS.Listen = "127.0.0.1:4222"
	if n, _ = a.prepareNATSAuth(); !n.policy.AllowAnonymous {
		t.Fatal("the zero-configuration server refuses local anonymous clients")
	}
}
