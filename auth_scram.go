package mailer

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
)

var (
	sha1Hash   = sha1.New
	sha256Hash = sha256.New
)

// maxSCRAMIterations bounds the PBKDF2 work a server can ask for: 1,048,576
// rounds, far above what servers use (Cyrus and Dovecot 4,096, OWASP's
// advice for stored SHA-256 hashes 600,000), costs a quarter second.
const maxSCRAMIterations = 1 << 20

// scramClient speaks SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677)
// without channel binding, which go-sasl lacks. It verifies the server's
// signature: a server that does not know the password cannot complete it.
// The user name is escaped as RFC 5802 5.1 requires; the password is used
// as given (no SASLprep).
type scramClient struct {
	ctx        context.Context // interrupts the key derivation
	mech       string
	h          func() hash.Hash
	user, pass string
	nonce      string // the client nonce

	step        int
	firstBare   string
	serverSig   []byte
	gotVerified bool
}

func newSCRAMClient(ctx context.Context, mech string, h func() hash.Hash, user, pass string) *scramClient {
	b := make([]byte, 18)
	rand.Read(b)
	return &scramClient{ctx: ctx, mech: mech, h: h, user: user, pass: pass, nonce: base64.RawStdEncoding.EncodeToString(b)}
}

func (c *scramClient) Start() (string, []byte, error) {
	name := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user)
	c.firstBare = "n=" + name + ",r=" + c.nonce
	return c.mech, []byte("n,," + c.firstBare), nil
}

func (c *scramClient) Next(challenge []byte) ([]byte, error) {
	c.step++
	switch c.step {
	case 1:
		return c.final(string(challenge))
	case 2:
		// Cyrus sends the server-final message as a challenge: verify
		// it and answer with an empty response.
		attrs := scramAttrs(string(challenge))
		if e, ok := attrs["e"]; ok {
			return nil, fmt.Errorf("mailer: %s: the server reports %q", c.mech, clip(e))
		}
		sig, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || !hmac.Equal(sig, c.serverSig) {
			return nil, fmt.Errorf("mailer: %s: the server's signature is wrong: it does not know the password", c.mech)
		}
		c.gotVerified = true
		return []byte{}, nil
	}
	return nil, fmt.Errorf("mailer: %s: unexpected challenge", c.mech)
}

// final answers the server-first message with the client proof.
func (c *scramClient) final(serverFirst string) ([]byte, error) {
	attrs := scramAttrs(serverFirst)
	nonce, salt64, iters := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return nil, fmt.Errorf("mailer: %s: the server's nonce does not extend ours", c.mech)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || len(salt) == 0 {
		return nil, fmt.Errorf("mailer: %s: bad salt from the server", c.mech)
	}
	n, err := strconv.Atoi(iters)
	if err != nil || n < 1 || n > maxSCRAMIterations {
		return nil, fmt.Errorf("mailer: %s: bad iteration count %q from the server", c.mech, iters)
	}
	salted, err := c.hi(salt, n)
	if err != nil {
		return nil, fmt.Errorf("mailer: %s: %w", c.mech, err)
	}
	withoutProof := "c=biws,r=" + nonce
	authMessage := c.firstBare + "," + serverFirst + "," + withoutProof
	clientKey := c.hmac(salted, "Client Key")
	storedKey := c.h()
	storedKey.Write(clientKey)
	proof := c.hmac(storedKey.Sum(nil), authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	c.serverSig = c.hmac(c.hmac(salted, "Server Key"), authMessage)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// hi is RFC 5802's Hi(password, salt, i): PBKDF2 with one block of the
// hash's size. It is written here rather than taken from crypto/pbkdf2 so
// that a server's iteration count cannot outlast the caller's context: the
// context is checked every few thousand rounds.
func (c *scramClient) hi(salt []byte, iterations int) ([]byte, error) {
	m := hmac.New(c.h, []byte(c.pass))
	m.Write(salt)
	m.Write([]byte{0, 0, 0, 1})
	u := m.Sum(nil)
	out := slices.Clone(u)
	for i := 1; i < iterations; i++ {
		if i%4096 == 0 && c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		m.Reset()
		m.Write(u)
		u = m.Sum(u[:0])
		for j := range out {
			out[j] ^= u[j]
		}
	}
	return out, nil
}

func (c *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(c.h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// verified reports whether the server proved it knows the password.
func (c *scramClient) verified() bool { return c.gotVerified }

func scramAttrs(s string) map[string]string {
	attrs := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && len(k) == 1 {
			attrs[k] = v
		}
	}
	return attrs
}
