package mailer

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

var (
	sha1Hash   = sha1.New
	sha256Hash = sha256.New
)

// maxSCRAMIterations bounds the PBKDF2 work a server can ask for.
const maxSCRAMIterations = 1 << 22

// scramClient speaks SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677)
// without channel binding, which go-sasl lacks. It verifies the server's
// signature: a server that does not know the password cannot complete it.
// The user name is escaped as RFC 5802 5.1 requires; the password is used
// as given (no SASLprep).
type scramClient struct {
	mech       string
	h          func() hash.Hash
	user, pass string
	nonce      string // the client nonce

	step        int
	firstBare   string
	serverSig   []byte
	gotVerified bool
}

func newSCRAMClient(mech string, h func() hash.Hash, user, pass string) *scramClient {
	b := make([]byte, 18)
	rand.Read(b)
	return &scramClient{mech: mech, h: h, user: user, pass: pass, nonce: base64.RawStdEncoding.EncodeToString(b)}
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
			return nil, fmt.Errorf("mailer: %s: the server reports %q", c.mech, e)
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
	salted, err := pbkdf2.Key(c.h, c.pass, salt, n, c.h().Size())
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
