package main

import (
	"crypto"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gomailer/mailer"
	"github.com/spf13/pflag"
)

// deliveryFlags say how messages go out once a session is open: DKIM
// signing, the rate limit and retries. send (bulk included) and sendmail
// take them; check sends nothing.
type deliveryFlags struct {
	fs *pflag.FlagSet

	dkimKeys      []string
	dkimSelectors []string
	dkimDomain    string
	rate          string
	rateBurst     int
	retry         int
}

// addDeliveryFlags defines the delivery flags on fs.
func addDeliveryFlags(fs *pflag.FlagSet) *deliveryFlags {
	d := &deliveryFlags{fs: fs}
	fs.StringArrayVar(&d.dkimKeys, "dkim-key", nil, "PEM private key to DKIM-sign with (RSA of 2048 bits or more, or Ed25519); repeat for an RSA + Ed25519 pair; must not be readable by group or others")
	fs.StringArrayVar(&d.dkimSelectors, "dkim-selector", nil, "DKIM selector of each --dkim-key, in the same order")
	fs.StringVar(&d.dkimDomain, "dkim-domain", "", "DKIM signing domain (d=) (default: the sender's domain)")
	fs.StringVar(&d.rate, "rate", "", "send at most N messages per DURATION, as N/DURATION: 100/1m, 5/s")
	fs.IntVar(&d.rateBurst, "rate-burst", 0, "with --rate, how many messages may start at once (default 1)")
	fs.IntVar(&d.retry, "retry", 0, "tries per message, the first included, when a failure provably delivered nothing (default 1: no retry)")
	return d
}

// options returns the library's options for the delivery flags laid over
// the SMTP profile p. senderDomain is the DKIM domain when neither
// --dkim-domain nor DKIM_DOMAIN names one.
func (d *deliveryFlags) options(p *smtpProfile, senderDomain string) ([]mailer.Option, error) {
	set := d.fs.Changed
	var opts []mailer.Option

	// The keys and their selectors come in pairs from one layer: a flag
	// for either replaces both profile keys.
	keys, selectors := []string(p.DKIMKey), []string(p.DKIMSelector)
	if set("dkim-key") || set("dkim-selector") {
		keys, selectors = d.dkimKeys, d.dkimSelectors
	}
	domain := p.DKIMDomain
	if set("dkim-domain") {
		domain = d.dkimDomain
	}
	if len(keys) > 0 || len(selectors) > 0 {
		if len(keys) != len(selectors) {
			return nil, usageErrorf("%d DKIM keys and %d selectors: give one --dkim-selector per --dkim-key, in the same order", len(keys), len(selectors))
		}
		if domain == "" {
			domain = senderDomain
		}
		if domain == "" {
			return nil, usageErrorf("no DKIM domain: give --dkim-domain")
		}
		sigs := make([]mailer.DKIM, len(keys))
		for i, path := range keys {
			key, err := readDKIMKey(path)
			if err != nil {
				return nil, err
			}
			sigs[i] = mailer.DKIM{Domain: domain, Selector: selectors[i], Key: key}
		}
		opts = append(opts, mailer.WithDKIM(sigs...))
	} else if domain != "" {
		return nil, usageErrorf("--dkim-domain without --dkim-key: give the key to sign with")
	}

	rate := p.Rate
	if set("rate") {
		rate = d.rate
	}
	burst := p.RateBurst
	if set("rate-burst") {
		burst = d.rateBurst
	}
	if rate != "" {
		n, per, err := parseRate(rate)
		if err != nil {
			return nil, err
		}
		if burst < 0 || burst == 0 && set("rate-burst") {
			return nil, usageErrorf("--rate-burst %d: give 1 or more", burst)
		}
		burst = max(burst, 1)
		opts = append(opts, mailer.WithRateLimit(n, per, burst))
	} else if burst != 0 {
		return nil, usageErrorf("--rate-burst without --rate: give the rate too")
	}

	retry := p.Retry
	if set("retry") {
		retry = d.retry
	}
	switch {
	case retry < 0 || retry == 0 && set("retry"):
		return nil, usageErrorf("--retry %d: give the number of tries, 1 or more", retry)
	case retry > 1:
		opts = append(opts, mailer.WithRetry(mailer.RetryPolicy{Attempts: retry}))
	}
	return opts, nil
}

// parseRate reads N/DURATION: "100/1m", "5/s" (a bare unit means one of
// it), "3600/1h".
func parseRate(s string) (int, time.Duration, error) {
	bad := usageErrorf("--rate %q: write it as N/DURATION, such as 100/1m or 5/s", s)
	num, dur, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, bad
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 1 {
		return 0, 0, bad
	}
	dur = strings.TrimSpace(dur)
	if dur != "" && (dur[0] < '0' || dur[0] > '9') && dur[0] != '.' {
		dur = "1" + dur
	}
	per, err := time.ParseDuration(dur)
	if err != nil || per <= 0 {
		return 0, 0, bad
	}
	return n, per, nil
}

// readDKIMKey reads a PEM private key, refusing a file that anyone but its
// owner may read or change, as a password file is refused.
func readDKIMKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, configErrorf("DKIM key %s does not exist", path)
		}
		return nil, configErrorf("DKIM key: %v", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, configErrorf("DKIM key %s is open to group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("DKIM key: %v", err)
	}
	key, err := mailer.ParseDKIMKey(data)
	if err != nil {
		return nil, configErrorf("%s: %s", path, oneLine(err))
	}
	return key, nil
}

// domainOf returns the domain of an address ("Name <a@b>" or "a@b"), ""
// when there is none.
func domainOf(addr string) string {
	if r, err := mailer.ParseRecipient(addr); err == nil {
		addr = r.Address
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.TrimSuffix(addr[at+1:], ">")
}
