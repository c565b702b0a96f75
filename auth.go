package mailer

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
)

// SASL mechanism names, for WithAuthMechanisms and AuthMechanisms.
const (
	AuthPlain       = "PLAIN"
	AuthLogin       = "LOGIN"
	AuthCRAMMD5     = "CRAM-MD5"
	AuthSCRAMSHA1   = "SCRAM-SHA-1"
	AuthSCRAMSHA256 = "SCRAM-SHA-256"
	AuthXOAUTH2     = "XOAUTH2"
	AuthOAuthBearer = "OAUTHBEARER"
)

// passwordOrder is the preference among password mechanisms, strongest
// first; tokenOrder among bearer-token mechanisms.
var (
	passwordOrder = []string{AuthSCRAMSHA256, AuthSCRAMSHA1, AuthCRAMMD5, AuthPlain, AuthLogin}
	tokenOrder    = []string{AuthXOAUTH2, AuthOAuthBearer}
)

// cleartext mechanisms reveal the password (or token) to anyone who can
// read the connection.
func cleartext(mech string) bool {
	return mech == AuthPlain || mech == AuthLogin || mech == AuthXOAUTH2 || mech == AuthOAuthBearer
}

// TokenSource supplies OAuth2 access tokens for XOAUTH2 and OAUTHBEARER.
// Token is called with refresh false for each authentication; when the
// server rejects that token it is called once more with refresh true, and
// must then return a newly fetched token, not a cached one.
//
// An oauth2.TokenSource from golang.org/x/oauth2 fits in a few lines:
//
//	cached := oauth2.ReuseTokenSource(nil, base)
//	ts := mailer.TokenFunc(func(ctx context.Context, refresh bool) (string, error) {
//		src := cached
//		if refresh {
//			src = base // skip the cache
//		}
//		t, err := src.Token()
//		if err != nil {
//			return "", err
//		}
//		return t.AccessToken, nil
//	})
type TokenSource interface {
	Token(ctx context.Context, refresh bool) (string, error)
}

// TokenFunc adapts a function to TokenSource.
type TokenFunc func(ctx context.Context, refresh bool) (string, error)

// Token calls f.
func (f TokenFunc) Token(ctx context.Context, refresh bool) (string, error) { return f(ctx, refresh) }

// authConfig is what the authentication options set.
type authConfig struct {
	username, password string
	mechanisms         []string           // allowed, in order of preference; nil = all
	tokens             TokenSource        // XOAUTH2 / OAUTHBEARER
	custom             func() sasl.Client // WithSASL
	allowInsecure      bool
}

func (a *authConfig) enabled() bool {
	return a.username != "" || a.password != "" || a.tokens != nil || a.custom != nil
}

func (a *authConfig) validate() error {
	for i, m := range a.mechanisms {
		m = strings.ToUpper(m)
		a.mechanisms[i] = m
		if !slices.Contains(passwordOrder, m) && !slices.Contains(tokenOrder, m) {
			return fmt.Errorf("mailer: unknown auth mechanism %q; known: %s", m,
				strings.Join(append(slices.Clone(passwordOrder), tokenOrder...), ", "))
		}
	}
	if a.tokens != nil && a.password != "" {
		return errors.New("mailer: WithCredentials and WithTokenSource both given; choose one")
	}
	return nil
}

// authClient is the part of go-smtp's Client that authenticates.
type authClient interface{ Auth(sasl.Client) error }

// authenticate chooses a mechanism from what the server offered and the
// caller allowed, and runs it; a rejected OAuth2 token is refreshed and
// tried once more. It returns the mechanism used.
func (a *authConfig) authenticate(ctx context.Context, c authClient, offered []string, encrypted bool) (string, error) {
	if a.custom != nil {
		cl := &started{Client: a.custom()}
		mech, _, err := cl.Start()
		if err != nil {
			return "", fmt.Errorf("mailer: AUTH: %w", err)
		}
		if !slices.Contains(offered, strings.ToUpper(mech)) {
			return "", fmt.Errorf("%w: the server offers %s, not %s", ErrAuthUnavailable, clip(fmt.Sprint(offered)), mech)
		}
		return mech, authError(mech, c.Auth(cl))
	}
	order := passwordOrder
	if a.tokens != nil {
		order = tokenOrder
	}
	mech, err := a.choose(order, offered, encrypted)
	if err != nil {
		return "", err
	}
	if a.tokens == nil {
		cl := a.passwordClient(ctx, mech)
		if err := c.Auth(cl); err != nil {
			return mech, authError(mech, err)
		}
		if v, ok := cl.(interface{ verified() bool }); ok && !v.verified() {
			return mech, fmt.Errorf("mailer: AUTH %s: the server accepted without proving it knows the password", mech)
		}
		return mech, nil
	}
	for refresh := false; ; refresh = true {
		token, err := a.tokens.Token(ctx, refresh)
		if err != nil {
			return mech, fmt.Errorf("mailer: AUTH %s: getting a token: %w", mech, err)
		}
		err = c.Auth(a.tokenClient(mech, token))
		if err == nil {
			return mech, nil
		}
		err = authError(mech, err)
		if refresh || !tokenRejected(err) {
			return mech, err
		}
	}
}

// authError names the mechanism in err: a server reply becomes an
// *SMTPError with Command "AUTH <mech>", anything else is wrapped.
func authError(mech string, err error) error {
	if err == nil {
		return nil
	}
	err = replyError("AUTH "+mech, err)
	var se *SMTPError
	if errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("mailer: AUTH %s: %w", mech, &clippedError{err})
}

// choose returns the first mechanism in the caller's order (or order) that
// the server offers and that may run on this connection.
func (a *authConfig) choose(order, offered []string, encrypted bool) (string, error) {
	allowed := order
	if a.mechanisms != nil {
		allowed = nil
		for _, m := range a.mechanisms {
			if slices.Contains(order, m) {
				allowed = append(allowed, m)
			}
		}
	}
	insecure := ""
	for _, m := range allowed {
		if !slices.Contains(offered, m) {
			continue
		}
		if cleartext(m) && !encrypted && !a.allowInsecure {
			if insecure == "" {
				insecure = m
			}
			continue
		}
		return m, nil
	}
	if insecure != "" {
		return "", fmt.Errorf("%w: %s would reveal the secret; use TLS, or WithInsecureAuth", ErrInsecureAuth, insecure)
	}
	return "", fmt.Errorf("%w: the server offers %s; allowed: %v", ErrAuthUnavailable, clip(fmt.Sprint(offered)), allowed)
}

func (a *authConfig) passwordClient(ctx context.Context, mech string) sasl.Client {
	switch mech {
	case AuthSCRAMSHA256:
		return newSCRAMClient(ctx, mech, sha256Hash, a.username, a.password)
	case AuthSCRAMSHA1:
		return newSCRAMClient(ctx, mech, sha1Hash, a.username, a.password)
	case AuthCRAMMD5:
		return &cramMD5Client{a.username, a.password}
	case AuthLogin:
		return &loginClient{user: a.username, pass: a.password}
	}
	return sasl.NewPlainClient("", a.username, a.password)
}

func (a *authConfig) tokenClient(mech, token string) sasl.Client {
	if mech == AuthOAuthBearer {
		return sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: a.username, Token: token})
	}
	return &xoauth2Client{user: a.username, token: token}
}

// tokenRejected reports whether err means the bearer token was refused: a
// 535 (after XOAUTH2's error challenge) or OAUTHBEARER's error reply.
func tokenRejected(err error) bool {
	var se *SMTPError
	var oe *sasl.OAuthBearerError
	return errors.As(err, &se) && (se.Code == 535 || se.EnhancedCode == EnhancedCode{5, 7, 8}) || errors.As(err, &oe)
}

// started lets the mechanism name of a caller's client be read before
// go-smtp calls Start.
type started struct {
	sasl.Client
	mech string
	ir   []byte
	err  error
	done bool
}

func (s *started) Start() (string, []byte, error) {
	if !s.done {
		s.mech, s.ir, s.err = s.Client.Start()
		s.done = true
	}
	return s.mech, s.ir, s.err
}

// loginClient speaks LOGIN, which go-sasl has but only for the exact
// challenges "Username:" and "Password:"; servers also send "User Name",
// "username:" and the like, so the challenge is matched loosely and, when
// it says neither, the first answer is the user name and the second the
// password.
type loginClient struct {
	user, pass string
	step       int
}

func (c *loginClient) Start() (string, []byte, error) { return AuthLogin, nil, nil }

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	c.step++
	ch := strings.ToLower(string(challenge))
	switch {
	case strings.Contains(ch, "pass"):
		return []byte(c.pass), nil
	case strings.Contains(ch, "user"):
		return []byte(c.user), nil
	case c.step == 1:
		return []byte(c.user), nil
	case c.step == 2:
		return []byte(c.pass), nil
	}
	return nil, fmt.Errorf("mailer: LOGIN: unexpected challenge %q", clip(string(challenge)))
}

// cramMD5Client speaks CRAM-MD5 (RFC 2195), which go-sasl lacks.
type cramMD5Client struct{ user, pass string }

func (c *cramMD5Client) Start() (string, []byte, error) { return AuthCRAMMD5, nil, nil }

func (c *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	m := hmac.New(md5.New, []byte(c.pass))
	m.Write(challenge)
	return []byte(c.user + " " + hex.EncodeToString(m.Sum(nil))), nil
}

// xoauth2Client speaks Google's and Microsoft's XOAUTH2, which go-sasl
// lacks. A rejected token draws a JSON challenge, answered with an empty
// response, after which the server sends its 535.
type xoauth2Client struct{ user, token string }

func (c *xoauth2Client) Start() (string, []byte, error) {
	return AuthXOAUTH2, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c *xoauth2Client) Next([]byte) ([]byte, error) { return []byte{}, nil }
