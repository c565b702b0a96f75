package mailer

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIM is one DKIM signature (RFC 6376; Ed25519 per RFC 8463) to add to
// every message of a Connection (WithDKIM) or to one message
// (Message.DKIM). The signing itself is go-msgauth's: relaxed/relaxed
// canonicalisation, SHA-256, and never an l= body length.
type DKIM struct {
	// Domain is the signing domain (d=), usually From's domain.
	Domain string
	// Selector names the key under Domain (s=): its public key is
	// published at <Selector>._domainkey.<Domain>.
	Selector string
	// Key is an *rsa.PrivateKey of 2048 bits or more, or an
	// ed25519.PrivateKey; ParseDKIMKey reads one from PEM.
	Key crypto.Signer
	// Headers are the header fields signed (h=), a name listed more times
	// than the message has it signing its absence; nil means
	// DefaultDKIMHeaders.
	Headers []string
}

// DefaultDKIMHeaders are the fields signed by default. The first seven are
// listed twice (over-signed), so that a second From, To, Subject, Date,
// Message-ID, MIME-Version or Content-Type added on the way breaks the
// signature; the others are signed where present and their later
// addition breaks it too.
var DefaultDKIMHeaders = []string{
	"From", "From", "To", "To", "Subject", "Subject", "Date", "Date",
	"Message-ID", "Message-ID", "MIME-Version", "MIME-Version", "Content-Type", "Content-Type",
	"Cc", "Reply-To", "Sender", "In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post",
	"Content-Transfer-Encoding",
}

// minDKIMRSABits is the smallest RSA key accepted: RFC 8301 3.2 forbids
// signing with less than 1024 bits, and 1024 is no longer safe.
const minDKIMRSABits = 2048

// WithDKIM signs every message sent through the Connection with each of
// sigs (the usual pair is one RSA and one Ed25519 signature). A message
// whose own DKIM field is set is signed with that instead. An invalid
// domain or selector, or a key of another type or an RSA key under 2048
// bits, is an error.
func WithDKIM(sigs ...DKIM) Option {
	return func(c *config) error {
		if err := checkDKIM(sigs); err != nil {
			return err
		}
		c.dkim = sigs
		return nil
	}
}

// checkDKIM validates signatures before anything is signed.
func checkDKIM(sigs []DKIM) error {
	for _, d := range sigs {
		for what, v := range map[string]string{"domain": d.Domain, "selector": d.Selector} {
			if v == "" || strings.IndexFunc(v, func(r rune) bool {
				return !(r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
			}) >= 0 {
				return fmt.Errorf("mailer: DKIM %s %s: letters, digits, '.', '-' and '_' only", what, quoteCut(v))
			}
		}
		if err := checkDKIMKey(d.Key); err != nil {
			return err
		}
		if d.Headers != nil && !containsFoldString(d.Headers, "From") {
			return errors.New("mailer: DKIM headers must include From (RFC 6376 5.4)")
		}
	}
	return nil
}

func containsFoldString(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func checkDKIMKey(k crypto.Signer) error {
	switch pub := keyPublic(k).(type) {
	case *rsa.PublicKey:
		if n := pub.N.BitLen(); n < minDKIMRSABits {
			return fmt.Errorf("mailer: DKIM RSA key of %d bits: at least %d are needed", n, minDKIMRSABits)
		}
	case ed25519.PublicKey:
	case nil:
		return errors.New("mailer: DKIM needs a key")
	default:
		return fmt.Errorf("mailer: DKIM key of type %T: use RSA (2048 bits or more) or Ed25519", pub)
	}
	return nil
}

func keyPublic(k crypto.Signer) crypto.PublicKey {
	if k == nil {
		return nil
	}
	return k.Public()
}

// ParseDKIMKey reads a private key from PEM: PKCS#1 ("RSA PRIVATE KEY")
// or PKCS#8 ("PRIVATE KEY", RSA or Ed25519), as openssl writes them. It
// returns an error for anything else, for an RSA key under 2048 bits, and
// for a public key or certificate given by mistake.
func ParseDKIMKey(pemData []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("mailer: DKIM key: no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
		return nil, fmt.Errorf("mailer: DKIM key: a %s was given; signing needs the private key", strings.ToLower(block.Type))
	case "OPENSSH PRIVATE KEY":
		return nil, errors.New("mailer: DKIM key: an OpenSSH key; convert it to PKCS#8 (ssh-keygen -p -m PKCS8 -f KEY)")
	default:
		return nil, fmt.Errorf("mailer: DKIM key: PEM block %q; want RSA PRIVATE KEY or PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("mailer: DKIM key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("mailer: DKIM key of type %T cannot sign", key)
	}
	if err := checkDKIMKey(signer); err != nil {
		return nil, err
	}
	return signer, nil
}

// dkimSignatures returns the DKIM-Signature fields, each with its CRLF,
// for the message write produces: write is called once with a writer
// that hashes what it is given, normalised to CRLF as the send path
// normalises it.
func dkimSignatures(sigs []DKIM, write func(io.Writer) error) (string, error) {
	signers := make([]*dkim.Signer, 0, len(sigs))
	writers := make([]io.Writer, 0, len(sigs))
	for _, d := range sigs {
		headers := d.Headers
		if headers == nil {
			headers = DefaultDKIMHeaders
		}
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: d.Domain, Selector: d.Selector, Signer: d.Key, HeaderKeys: headers,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		})
		if err != nil {
			for _, s := range signers {
				s.Close()
			}
			return "", fmt.Errorf("mailer: DKIM: %w", err)
		}
		signers, writers = append(signers, s), append(writers, s)
	}
	crlf := newCRLFWriter(io.MultiWriter(writers...))
	err := write(crlf)
	if err == nil {
		err = crlf.Close()
	}
	for _, s := range signers {
		// Every signer is closed, so that none of go-msgauth's goroutines
		// is left waiting.
		if cerr := s.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("mailer: DKIM: %w", cerr)
		}
	}
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, s := range signers {
		b.WriteString(s.Signature())
	}
	return b.String(), nil
}
