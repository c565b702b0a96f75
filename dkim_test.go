package mailer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/gomailer/mailer/internal/testenv"
	"github.com/gomailer/mailer/mailertest"
)

// testKeys are generated once per test binary: nothing secret is in the
// repository.
var testKeys = sync.OnceValues(func() (*rsa.PrivateKey, ed25519.PrivateKey) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return rk, ek
})

// testSigs returns an RSA and an Ed25519 signature for example.test, and
// the DNS TXT records that publish their keys.
func testSigs(t testing.TB) ([]DKIM, map[string]string) {
	rk, ek := testKeys()
	der, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]string{
		"rsa._domainkey.example.test": "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der),
		"ed._domainkey.example.test":  "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(ek.Public().(ed25519.PublicKey)),
	}
	return []DKIM{{Domain: "example.test", Selector: "rsa", Key: rk}, {Domain: "example.test", Selector: "ed", Key: ek}}, records
}

// dkimpyScript verifies every DKIM-Signature of the message in argv[1]
// with dkimpy, the records coming from the file in argv[2] ("name record"
// lines), and prints one line per signature.
const dkimpyScript = `
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
records = {}
for line in open(sys.argv[2]):
    name, _, rec = line.rstrip('\n').partition(' ')
    records[name] = rec.encode()
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip('.'))
d = dkim.DKIM(msg)
n = msg.split(b'\r\n\r\n', 1)[0].lower().count(b'\ndkim-signature:') + msg.lower().startswith(b'dkim-signature:')
for i in range(n):
    print(i, d.verify(idx=i, dnsfunc=dnsfunc))
`

// verifyDKIM checks every signature of msg with go-msgauth and with
// dkimpy, and that there are want of them.
func verifyDKIM(t *testing.T, msg []byte, records map[string]string, want int) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if r, ok := records[domain]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT record for %s", domain)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != want {
		t.Fatalf("%d signatures, want %d", len(vs), want)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("go-msgauth: signature by %s: %v", v.Domain, v.Err)
		}
	}
	if bytes.Contains(bytes.ToLower(msg), []byte("; l=")) {
		t.Error("a signature has a body length (l=)")
	}
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import dkim").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dkimpy (Debian's python3-dkim) is missing: %v; scripts/install-test-deps installs it", err)
		}
		t.Log("dkimpy not installed: verified with go-msgauth only (scripts/install-test-deps installs python3-dkim)")
		return
	}
	dir := t.TempDir()
	mf, rf := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "records")
	var recs strings.Builder
	for name, r := range records {
		fmt.Fprintf(&recs, "%s %s\n", name, r)
	}
	if err := os.WriteFile(mf, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rf, []byte(recs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-c", dkimpyScript, mf, rf).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	var lines []string
	for l := range strings.Lines(strings.TrimSpace(string(out))) {
		lines = append(lines, strings.TrimSpace(l))
	}
	if len(lines) != want {
		t.Fatalf("dkimpy saw %d signatures, want %d:\n%s", len(lines), want, out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "True") {
			t.Errorf("dkimpy: signature %s", l)
		}
	}
}

func dkimMessage(id string) *Message {
	return &Message{
		From: Recipient{Name: "Sender Ünïcode", Address: "from@example.test"}, To: []Recipient{{Name: "To", Address: "to@example.test"}},
		Subject: "Signed: a subject long enough to be folded by the header writer, with ünïcode words in it",
		Text:    "Hello.\n\n.leading dot\ntrailing spaces   \n", HTML: "<p>Hello.</p>", MessageID: id,
	}
}

// TestDKIMSignsEveryPath: Send, SendRaw (seekable and read-once), SendAll
// and a message with a read-once attachment big enough to be spooled to a
// file: the received copy carries both signatures, and both verify.
func TestDKIMSignsEveryPath(t *testing.T) {
	sigs, records := testSigs(t)
	for _, srvOpts := range [][]mailertest.Option{nil, {mailertest.WithoutChunking()}, {mailertest.WithoutPipelining()}} {
		srv := newTestServer(t, srvOpts...)
		c := plainConnect(t, srv, WithDKIM(sigs...))
		if _, err := c.Send(testCtx(t), dkimMessage("send@example.test")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SendRaw(testCtx(t), testEnvelope, strings.NewReader(rawBody)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SendRaw(testCtx(t), testEnvelope, io.MultiReader(strings.NewReader(strings.ReplaceAll(rawBody, "\r\n", "\n")))); err != nil {
			t.Fatal(err)
		}
		for _, o := range collect(c.SendAll(testCtx(t), slices.Values([]*Message{dkimMessage("all1@example.test"), dkimMessage("all2@example.test")}))) {
			if o.err != nil {
				t.Fatal(o.err)
			}
		}
		big := dkimMessage("big@example.test")
		big.AttachReader("data.bin", &endless{left: 3 << 20})
		if _, err := c.Send(testCtx(t), big); err != nil {
			t.Fatal(err)
		}
		msgs := srv.Messages()
		if len(msgs) != 6 {
			t.Fatalf("%d messages", len(msgs))
		}
		for _, m := range msgs {
			verifyDKIM(t, m.Data, records, 2)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "mailer-spool-*")); len(left) > 0 {
		t.Errorf("spool files left behind: %v", left)
	}
}

// TestDKIMOverSigned: a second From or Subject added after signing breaks
// the signature; the signed header list is the default one.
func TestDKIMOverSigned(t *testing.T) {
	sigs, records := testSigs(t)
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithDKIM(sigs[0]))
	if _, err := c.Send(testCtx(t), dkimMessage("over@example.test")); err != nil {
		t.Fatal(err)
	}
	data := srv.Messages()[0].Data
	verifyDKIM(t, data, records, 1)
	for _, extra := range []string{"From: evil@example.test\r\n", "Subject: changed\r\n", "Cc: more@example.test\r\n"} {
		i := bytes.Index(data, []byte("\r\n\r\n"))
		tampered := slices.Concat(data[:i+2], []byte(extra), data[i+2:])
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(tampered), &dkim.VerifyOptions{
			LookupTXT: func(string) ([]string, error) { return []string{records["rsa._domainkey.example.test"]}, nil },
		})
		if err != nil || len(vs) != 1 || vs[0].Err == nil {
			t.Errorf("adding %q did not break the signature", extra)
		}
	}
	if !bytes.Contains(data, []byte("h=From:From:To:To:Subject:Subject:Date:Date:Message-ID:Message-ID:")) {
		t.Errorf("signed header list: %s", data[:bytes.Index(data, []byte("\r\n\r\n"))])
	}
	if !bytes.Contains(data, []byte("c=relaxed/relaxed")) {
		t.Error("not relaxed/relaxed")
	}
}

// TestDKIMPerMessage: a message's own signatures replace the Connection's.
func TestDKIMPerMessage(t *testing.T) {
	sigs, records := testSigs(t)
	srv := newTestServer(t)
	c := plainConnect(t, srv, WithDKIM(sigs...))
	m := dkimMessage("own@example.test")
	m.DKIM = sigs[1:]
	if _, err := c.Send(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	verifyDKIM(t, srv.Messages()[0].Data, records, 1)
	m.DKIM = []DKIM{{Domain: "example.test", Selector: "bad selector", Key: sigs[1].Key}}
	if _, err := c.Send(testCtx(t), m); err == nil {
		t.Error("an invalid per-message DKIM was accepted")
	}
}

func TestParseDKIMKey(t *testing.T) {
	rk, ek := testKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pk8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	pub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	good := map[string][]byte{
		"PKCS#1 RSA":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		"PKCS#8 RSA":     pk8(rk),
		"PKCS#8 Ed25519": pk8(ek),
	}
	for name, b := range good {
		k, err := ParseDKIMKey(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if _, err := NewConnection("localhost", WithDKIM(DKIM{Domain: "example.test", Selector: "s1", Key: k})); err != nil {
			t.Errorf("%s: WithDKIM: %v", name, err)
		}
	}
	bad := map[string][]byte{
		"1024-bit RSA": pk8(small),
		"public key":   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"OpenSSH":      pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: []byte("x")}),
		"not PEM":      []byte("hello"),
		"broken DER":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}),
	}
	for name, b := range bad {
		if _, err := ParseDKIMKey(b); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	for name, d := range map[string]DKIM{
		"1024-bit":      {Domain: "example.test", Selector: "s", Key: small},
		"no key":        {Domain: "example.test", Selector: "s"},
		"no domain":     {Selector: "s", Key: ek},
		"CRLF selector": {Domain: "example.test", Selector: "s\r\nx", Key: ek},
		"no From":       {Domain: "example.test", Selector: "s", Key: ek, Headers: []string{"Subject"}},
		"ECDSA":         {Domain: "example.test", Selector: "s", Key: ecdsaKey(t)},
	} {
		if _, err := NewConnection("localhost", WithDKIM(d)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// TestDKIMThroughPostfix: a signed message delivered by the real Postfix
// still verifies in its Maildir copy, with both verifiers.
func TestDKIMThroughPostfix(t *testing.T) {
	env := testenv.Postfix(t)
	sigs, records := testSigs(t)
	c, err := NewConnection(env.Plain, WithSecurity(SecurityNone), WithDKIM(sigs...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := fmt.Sprintf("dkim-%d@example.test", os.Getpid())
	m := dkimMessage(id)
	m.AttachBytes("notes.txt", bytes.Repeat([]byte("line of an attachment\n"), 500))
	if _, err := c.Send(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	// Maildir files have Unix line ends; the message on the wire had CRLF.
	got := env.WaitMessage(t, id, 30*time.Second)
	verifyDKIM(t, bytes.ReplaceAll(bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n")), records, 2)
}

func ecdsaKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
