package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"time"
)

// passwordEnv is read when no other password source is given on the
// command line.
const passwordEnv = "MAILER_PASSWORD"

// resolvePassword fills s.password from the first source given: the
// command line (--password, --password-command, --password-file,
// --password-env), the MAILER_PASSWORD variable, then the profile
// (PASSWORD_COMMAND, PASSWORD_FILE, PASSWORD_ENV, PASSWORD). Without a
// user name only a password flag is an error.
func (c *connFlags) resolvePassword(s *settings, p *smtpProfile) error {
	var (
		pw    string
		found bool
		err   error
	)
	fromFlags := true
	switch {
	case c.fs.Changed("password"):
		pw, found = c.password, true
	case c.passwordCommand != "":
		pw, err = passwordFromCommand(c.passwordCommand)
		found = true
	case c.passwordFile != "":
		pw, err = passwordFromFile(c.passwordFile)
		found = true
	case c.passwordEnv != "":
		pw, found = os.LookupEnv(c.passwordEnv)
		if !found {
			return configErrorf("--password-env: the variable %s is not set", c.passwordEnv)
		}
	}
	if !found {
		fromFlags = false
		pw, found = os.LookupEnv(passwordEnv)
	}
	if !found {
		switch {
		case p.PasswordCommand != "":
			pw, err = passwordFromCommand(p.PasswordCommand)
			found = true
		case p.PasswordFile != "":
			pw, err = passwordFromFile(p.PasswordFile)
			found = true
		case p.PasswordEnv != "":
			pw, found = os.LookupEnv(p.PasswordEnv)
			if !found {
				return configErrorf("profile PASSWORD_ENV: the variable %s is not set", p.PasswordEnv)
			}
		case p.Password != nil:
			pw, found = *p.Password, true
		}
	}
	if err != nil {
		return err
	}
	if found && s.username == "" {
		if fromFlags {
			return usageErrorf("a password was given without --username")
		}
		// A password in the environment or the profile without a user
		// name is not used, as mumailer did not.
		return nil
	}
	if !found && s.username != "" {
		return configErrorf("no password for %s: give --password-command, --password-file or the %s variable", s.username, passwordEnv)
	}
	s.password = pw
	return nil
}

// passwordFromCommand runs command with sh -c, like msmtp's passwordeval,
// and returns the first line it prints.
func passwordFromCommand(command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", configErrorf("the password command failed (%v): run it by hand to see why", err)
	}
	pw := firstLine(out)
	if pw == "" {
		return "", configErrorf("the password command printed nothing")
	}
	return pw, nil
}

// passwordFromFile reads the first line of path, refusing a file that
// anyone but its owner may read or change.
func passwordFromFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", configErrorf("password file %s does not exist", path)
		}
		return "", configErrorf("password file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", configErrorf("password file %s is open to group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", configErrorf("password file: %v", err)
	}
	pw := firstLine(data)
	if pw == "" {
		return "", configErrorf("password file %s is empty", path)
	}
	return pw, nil
}

// firstLine returns b up to its first line end.
func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strings.TrimSuffix(string(line), "\r")
}
