package mailer

// This file reads OpenSSL cipher strings ("HIGH:!aNULL", "ECDHE+AESGCM",
// "ALL:@SECLEVEL=1"). crypto/tls knows suites only by IANA name and has no
// cipher-string parser, so OpenSSL 3's rules (ssl/ssl_ciph.c) are written
// out here for the suites crypto/tls implements.

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// Algorithm bits, as in OpenSSL's ssl_local.h, for the algorithms of the
// suites crypto/tls implements (and aNULL and eNULL, which keywords exclude).
const (
	kRSA uint32 = 1 << iota
	kECDHE
)

const (
	aRSA uint32 = 1 << iota
	aECDSA
	aNULL
)

const (
	eAES128 uint32 = 1 << iota
	eAES256
	eAES128GCM
	eAES256GCM
	eCHACHA20
	e3DES
	eRC4
	eNULL
)

const (
	mSHA1 uint32 = 1 << iota
	mSHA256
	mSHA384
	mAEAD
)

// Strength classes; sNotDefault marks the suites DEFAULT leaves out.
const (
	sLow uint32 = 1 << iota
	sMedium
	sHigh
	sFIPS
	sNotDefault
	strongMask = sLow | sMedium | sHigh | sFIPS
)

const (
	verSSL3  = 0x0300
	verTLS10 = tls.VersionTLS10
	verTLS12 = tls.VersionTLS12
)

// A goSuite is one TLS 1.0-1.2 suite crypto/tls implements, with the
// attributes OpenSSL gives it (ssl/s3_lib.c): its algorithms, the version
// that introduced it, its strength class and its strength in bits.
type goSuite struct {
	id                 uint16
	name               string
	kx, auth, enc, mac uint32
	version            uint16
	strength           uint32
	bits               int
}

var goSuites = []goSuite{
	{0x0005, "RC4-SHA", kRSA, aRSA, eRC4, mSHA1, verSSL3, sMedium | sNotDefault, 128},
	{0x000a, "DES-CBC3-SHA", kRSA, aRSA, e3DES, mSHA1, verSSL3, sMedium | sFIPS | sNotDefault, 112},
	{0x002f, "AES128-SHA", kRSA, aRSA, eAES128, mSHA1, verSSL3, sHigh | sFIPS, 128},
	{0x0035, "AES256-SHA", kRSA, aRSA, eAES256, mSHA1, verSSL3, sHigh | sFIPS, 256},
	{0x003c, "AES128-SHA256", kRSA, aRSA, eAES128, mSHA256, verTLS12, sHigh | sFIPS, 128},
	{0x009c, "AES128-GCM-SHA256", kRSA, aRSA, eAES128GCM, mAEAD, verTLS12, sHigh | sFIPS, 128},
	{0x009d, "AES256-GCM-SHA384", kRSA, aRSA, eAES256GCM, mAEAD, verTLS12, sHigh | sFIPS, 256},
	{0xc007, "ECDHE-ECDSA-RC4-SHA", kECDHE, aECDSA, eRC4, mSHA1, verTLS10, sMedium | sNotDefault, 128},
	{0xc009, "ECDHE-ECDSA-AES128-SHA", kECDHE, aECDSA, eAES128, mSHA1, verTLS10, sHigh | sFIPS, 128},
	{0xc00a, "ECDHE-ECDSA-AES256-SHA", kECDHE, aECDSA, eAES256, mSHA1, verTLS10, sHigh | sFIPS, 256},
	{0xc011, "ECDHE-RSA-RC4-SHA", kECDHE, aRSA, eRC4, mSHA1, verTLS10, sMedium | sNotDefault, 128},
	{0xc012, "ECDHE-RSA-DES-CBC3-SHA", kECDHE, aRSA, e3DES, mSHA1, verTLS10, sMedium | sFIPS | sNotDefault, 112},
	{0xc013, "ECDHE-RSA-AES128-SHA", kECDHE, aRSA, eAES128, mSHA1, verTLS10, sHigh | sFIPS, 128},
	{0xc014, "ECDHE-RSA-AES256-SHA", kECDHE, aRSA, eAES256, mSHA1, verTLS10, sHigh | sFIPS, 256},
	{0xc023, "ECDHE-ECDSA-AES128-SHA256", kECDHE, aECDSA, eAES128, mSHA256, verTLS12, sHigh | sFIPS, 128},
	{0xc027, "ECDHE-RSA-AES128-SHA256", kECDHE, aRSA, eAES128, mSHA256, verTLS12, sHigh | sFIPS, 128},
	{0xc02b, "ECDHE-ECDSA-AES128-GCM-SHA256", kECDHE, aECDSA, eAES128GCM, mAEAD, verTLS12, sHigh | sFIPS, 128},
	{0xc02c, "ECDHE-ECDSA-AES256-GCM-SHA384", kECDHE, aECDSA, eAES256GCM, mAEAD, verTLS12, sHigh | sFIPS, 256},
	{0xc02f, "ECDHE-RSA-AES128-GCM-SHA256", kECDHE, aRSA, eAES128GCM, mAEAD, verTLS12, sHigh | sFIPS, 128},
	{0xc030, "ECDHE-RSA-AES256-GCM-SHA384", kECDHE, aRSA, eAES256GCM, mAEAD, verTLS12, sHigh | sFIPS, 256},
	{0xcca8, "ECDHE-RSA-CHACHA20-POLY1305", kECDHE, aRSA, eCHACHA20, mAEAD, verTLS12, sHigh, 256},
	{0xcca9, "ECDHE-ECDSA-CHACHA20-POLY1305", kECDHE, aECDSA, eCHACHA20, mAEAD, verTLS12, sHigh, 256},
}

// openSSLNames maps OpenSSL cipher names to the IANA names crypto/tls uses,
// for every TLS 1.0-1.2 suite crypto/tls implements.
var openSSLNames = func() map[string]string {
	m := make(map[string]string, len(goSuites))
	for _, s := range goSuites {
		m[s.name] = tls.CipherSuiteName(s.id)
	}
	return m
}()

// A cipherRule selects suites as an entry of OpenSSL's cipher_aliases does:
// every non-zero mask must share a bit with the suite.
type cipherRule struct {
	kx, auth, enc, mac, strength uint32
	version                      uint16 // the suite's exact minimum version
	id                           uint16 // one suite
	none                         bool   // selects nothing crypto/tls implements
}

// cipherKeywords are OpenSSL's keywords (ssl_ciph.c, cipher_aliases).
// Those for algorithms crypto/tls lacks select nothing.
var cipherKeywords = func() map[string]cipherRule {
	m := map[string]cipherRule{
		"ALL": {enc: ^eNULL}, "COMPLEMENTOFALL": {enc: eNULL}, "COMPLEMENTOFDEFAULT": {strength: sNotDefault},
		"HIGH": {strength: sHigh}, "MEDIUM": {strength: sMedium}, "LOW": {strength: sLow},
		"FIPS": {enc: ^eNULL, strength: sFIPS},
		"kRSA": {kx: kRSA}, "RSA": {kx: kRSA, auth: aRSA}, "aRSA": {auth: aRSA},
		"kECDHE": {kx: kECDHE}, "kEECDH": {kx: kECDHE}, "ECDH": {kx: kECDHE},
		"ECDHE": {kx: kECDHE, auth: ^aNULL}, "EECDH": {kx: kECDHE, auth: ^aNULL},
		"AECDH": {kx: kECDHE, auth: aNULL}, "aNULL": {auth: aNULL},
		"aECDSA": {auth: aECDSA}, "ECDSA": {auth: aECDSA},
		"AES":    {enc: eAES128 | eAES256 | eAES128GCM | eAES256GCM},
		"AES128": {enc: eAES128 | eAES128GCM}, "AES256": {enc: eAES256 | eAES256GCM},
		"AESGCM": {enc: eAES128GCM | eAES256GCM}, "CHACHA20": {enc: eCHACHA20},
		"CBC": {enc: eAES128 | eAES256 | e3DES}, "3DES": {enc: e3DES}, "RC4": {enc: eRC4},
		"eNULL": {enc: eNULL}, "NULL": {enc: eNULL},
		"SHA1": {mac: mSHA1}, "SHA": {mac: mSHA1}, "SHA256": {mac: mSHA256}, "SHA384": {mac: mSHA384},
		"SSLv3": {version: verSSL3}, "TLSv1": {version: verTLS10}, "TLSv1.0": {version: verTLS10},
		"TLSv1.2": {version: verTLS12},
	}
	for _, k := range strings.Fields(`kDHE kEDH DH DHE EDH ADH kPSK kRSAPSK kECDHEPSK kDHEPSK PSK
		kSRP SRP kGOST kGOST18 aDSS DSS aPSK aSRP aGOST aGOST01 aGOST12 AESCCM AESCCM8 ARIA ARIAGCM
		ARIA128 ARIA256 CAMELLIA CAMELLIA128 CAMELLIA256 SEED IDEA RC2 GOST MD5 GOST94 GOST89MAC GOST12`) {
		m[k] = cipherRule{none: true}
	}
	return m
}()

// defaultCiphers is OpenSSL 3's DEFAULT.
const defaultCiphers = "ALL:!COMPLEMENTOFDEFAULT:!eNULL"

// and narrows p by q the way OpenSSL joins the words of "A+B". It reports
// false when a group of bits becomes empty: such a rule selects nothing.
func (p *cipherRule) and(q cipherRule) bool {
	ok := true
	join := func(acc *uint32, v, mask uint32) {
		v &= mask
		if v == 0 {
			return
		}
		if *acc&mask == 0 {
			*acc |= v
			return
		}
		*acc &= v | ^mask
		ok = ok && *acc&mask != 0
	}
	join(&p.kx, q.kx, ^uint32(0))
	join(&p.auth, q.auth, ^uint32(0))
	join(&p.enc, q.enc, ^uint32(0))
	join(&p.mac, q.mac, ^uint32(0))
	join(&p.strength, q.strength, strongMask)
	join(&p.strength, q.strength, sNotDefault)
	if q.version != 0 {
		ok = ok && (p.version == 0 || p.version == q.version)
		p.version = q.version
	}
	p.id = q.id
	p.none = p.none || q.none
	return ok
}

func (p cipherRule) match(s *goSuite) bool {
	return !p.none && (p.id == 0 || p.id == s.id) &&
		(p.kx == 0 || p.kx&s.kx != 0) && (p.auth == 0 || p.auth&s.auth != 0) &&
		(p.enc == 0 || p.enc&s.enc != 0) && (p.mac == 0 || p.mac&s.mac != 0) &&
		(p.version == 0 || p.version == s.version) &&
		(p.strength&strongMask == 0 || p.strength&s.strength&strongMask != 0) &&
		(p.strength&sNotDefault == 0 || s.strength&sNotDefault != 0)
}

// allowedAt reports whether OpenSSL offers s at security level n
// (ssl_security_default_callback): enough bits, no SHA-1 MAC above 160
// bits, no RC4 from level 2, forward secrecy from level 3.
func (s *goSuite) allowedAt(n int) bool {
	bits := [...]int{0, 80, 112, 128, 192, 256}[n]
	return s.bits >= bits && !(bits > 160 && s.mac == mSHA1) &&
		!(n >= 2 && s.enc == eRC4) && !(n >= 3 && s.kx != kECDHE)
}

type ruleOp int

const (
	opAdd  ruleOp = iota // append if not yet in the list
	opKill               // "!": remove for good
	opDel                // "-": remove, may be added again
	opOrd                // "+": move to the end
	opBump               // move to the front (only in OpenSSL's own ordering)
)

type listEntry struct {
	s      *goSuite
	active bool
}

// cipherList is OpenSSL's CIPHER_ORDER list: every suite not killed, in
// order, active or not. Inactive suites keep their place, which decides
// where they go when added again.
type cipherList []*listEntry

func (l *cipherList) remove(e *listEntry) {
	for i, x := range *l {
		if x == e {
			*l = append((*l)[:i], (*l)[i+1:]...)
			return
		}
	}
}

func (l *cipherList) move(e *listEntry, front bool) {
	l.remove(e)
	if front {
		*l = append(cipherList{e}, *l...)
	} else {
		*l = append(*l, e)
	}
}

// apply is ssl_cipher_apply_rule: each suite is visited once, in list order
// (backwards for opDel and opBump, which keeps their relative order).
func (l *cipherList) apply(op ruleOp, p cipherRule) {
	visit := append(cipherList(nil), *l...)
	for i := range visit {
		e := visit[i]
		if op == opDel || op == opBump {
			e = visit[len(visit)-1-i]
		}
		if !p.match(e.s) {
			continue
		}
		switch {
		case op == opAdd && !e.active:
			l.move(e, false)
			e.active = true
		case op == opOrd && e.active:
			l.move(e, false)
		case op == opDel && e.active:
			l.move(e, true)
			e.active = false
		case op == opBump && e.active:
			l.move(e, true)
		case op == opKill:
			l.remove(e)
		}
	}
}

// sortByStrength is @STRENGTH: active suites go to the end, strongest
// first, keeping their order within the same strength.
func (l *cipherList) sortByStrength() {
	var out, active cipherList
	for _, e := range *l {
		if e.active {
			active = append(active, e)
		} else {
			out = append(out, e)
		}
	}
	for bits := 256; bits >= 0; bits-- {
		for _, e := range active {
			if e.s.bits == bits {
				out = append(out, e)
			}
		}
	}
	*l = out
}

// newCipherList returns every suite, inactive, in the order of
// ssl_create_cipher_list: ECDHE and AES first, RSA key exchange and RC4
// last, then by strength, with TLS 1.2, AEAD and forward secrecy bumped to
// the front. (Its rules for MD5, anonymous and PSK suites touch no Go suite.)
func newCipherList() cipherList {
	var l cipherList
	for i := len(goSuites) - 1; i >= 0; i-- {
		l = append(l, &listEntry{s: &goSuites[i]})
	}
	l.apply(opAdd, cipherRule{kx: kECDHE, auth: aECDSA})
	l.apply(opAdd, cipherRule{kx: kECDHE})
	l.apply(opDel, cipherRule{kx: kECDHE})
	l.apply(opAdd, cipherRule{enc: eAES128GCM | eAES256GCM})
	l.apply(opAdd, cipherRule{enc: eCHACHA20})
	l.apply(opAdd, cipherRule{enc: eAES128 | eAES256})
	l.apply(opAdd, cipherRule{})
	l.apply(opOrd, cipherRule{kx: kRSA})
	l.apply(opOrd, cipherRule{enc: eRC4})
	l.sortByStrength()
	l.apply(opBump, cipherRule{version: verTLS12})
	l.apply(opBump, cipherRule{mac: mAEAD})
	l.apply(opBump, cipherRule{kx: kECDHE})
	l.apply(opBump, cipherRule{kx: kECDHE, mac: mAEAD})
	l.apply(opDel, cipherRule{})
	return l
}

// lookupCipher returns the rule for one word of a cipher string: a keyword,
// a suite crypto/tls implements (OpenSSL or IANA name), or a suite it lacks.
func lookupCipher(word string) (cipherRule, bool) {
	if p, ok := cipherKeywords[word]; ok {
		return p, true
	}
	for _, s := range goSuites {
		if word == s.name || word == tls.CipherSuiteName(s.id) {
			return cipherRule{kx: s.kx, auth: s.auth, enc: s.enc, mac: s.mac, strength: s.strength, id: s.id}, true
		}
	}
	if slices.Contains(tls13Suites, word) || slices.Contains(otherSuites, word) {
		return cipherRule{none: true}, true
	}
	return cipherRule{}, false
}

// parseCiphers turns an OpenSSL cipher string into crypto/tls suite IDs in
// OpenSSL's order. Without unsafe, suites crypto/tls deems insecure are
// left out when a keyword selected them and are an error when named. A
// string of TLS 1.3 suite names only, which crypto/tls does not let one
// choose, returns nil: crypto/tls's defaults.
func parseCiphers(list string, unsafe bool) ([]uint16, error) {
	items := strings.FieldsFunc(list, func(r rune) bool { return strings.ContainsRune(":, ;", r) })
	onlyTLS13 := true
	for _, it := range items {
		onlyTLS13 = onlyTLS13 && slices.Contains(tls13Suites, it)
	}
	if onlyTLS13 {
		return nil, nil
	}
	if items[0] == "DEFAULT" {
		items = append(strings.Split(defaultCiphers, ":"), items[1:]...)
	}
	l := newCipherList()
	level := 0
	named := map[uint16]bool{}
	for _, it := range items {
		op, rest := opAdd, it
		switch it[0] {
		case '!':
			op, rest = opKill, it[1:]
		case '-':
			op, rest = opDel, it[1:]
		case '+':
			op, rest = opOrd, it[1:]
		case '@':
			if it == "@STRENGTH" {
				l.sortByStrength()
			} else if n, ok := strings.CutPrefix(it, "@SECLEVEL="); ok && len(n) == 1 && n >= "0" && n <= "5" {
				level = int(n[0] - '0')
			} else {
				return nil, fmt.Errorf("mailer: cipher string %q: unknown command %q; valid: @STRENGTH, @SECLEVEL=0 to 5", list, it)
			}
			continue
		}
		p, ok := cipherRule{}, true
		for _, w := range strings.Split(rest, "+") {
			q, known := lookupCipher(w)
			switch {
			case w == "DEFAULT":
				return nil, fmt.Errorf("mailer: cipher string %q: DEFAULT can only begin the string", list)
			case !known:
				return nil, fmt.Errorf("mailer: unknown cipher or keyword %q in %q; use OpenSSL syntax such as "+
					`"HIGH:!aNULL", "ECDHE+AESGCM" or "ECDHE-RSA-AES256-GCM-SHA384" (see docs/encryption.md)`, w, list)
			}
			ok = p.and(q) && ok
		}
		if ok {
			l.apply(op, p)
			if p.id != 0 && op != opKill && op != opDel {
				named[p.id] = true
			}
		}
	}
	insecure := map[uint16]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	var ids []uint16
	var dropped string
	for _, e := range l {
		switch {
		case !e.active || !e.s.allowedAt(level):
		case insecure[e.s.id] && !unsafe && named[e.s.id]:
			return nil, fmt.Errorf("mailer: cipher suite %s is insecure; use WithUnsafeEncryption to allow it", e.s.name)
		case insecure[e.s.id] && !unsafe:
			if dropped == "" {
				dropped = e.s.name
			}
		default:
			ids = append(ids, e.s.id)
		}
	}
	switch {
	case len(ids) == 0 && dropped != "":
		return nil, fmt.Errorf("mailer: cipher string %q selects only suites crypto/tls deems insecure, such as %s; use WithUnsafeEncryption to allow them", list, dropped)
	case len(ids) == 0:
		return nil, fmt.Errorf("mailer: cipher string %q selects no TLS 1.0-1.2 suite that crypto/tls implements (see docs/encryption.md)", list)
	}
	return ids, nil
}
