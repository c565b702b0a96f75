// Command mailer sends e-mail over SMTP with the github.com/gomailer/mailer
// library. It has four faces:
//
//	mailer send      a message from flags and mumailer's YAML profiles, or one
//	                 message per row of a CSV or JSON-lines file
//	mailer sendmail  a sendmail-compatible front for cron, git send-email, mutt
//	mailer check     what a server offers: greeting, extensions, TLS, auth
//	mailer outbox    an outbox's migrations, its messages by state, and the
//	                 resending or dropping of those of unknown outcome
//
// Run "mailer help" or see docs/cli.md in the repository for every flag.
// Installed or linked under the name "sendmail", it acts as "mailer
// sendmail".
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args (args[0] is the program name) and
// returns the exit status; errors are printed to stderr as one line.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin, stdout, stderr)
	argv := args[1:]
	if filepath.Base(args[0]) == "sendmail" {
		argv = append([]string{"sendmail"}, argv...)
	}
	if cmd, _, err := root.Find(argv); err == nil && cmd.Name() == "send" {
		argv = expandMultiValues(argv, cmd)
	}
	root.SetArgs(argv)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		// Cobra's own errors: an unknown flag or command, a missing value.
		ee = &exitError{code: exUsage, msg: err.Error() + " (see mailer help)"}
	}
	fmt.Fprintln(stderr, "mailer: "+ee.msg)
	return ee.code
}

// newRootCommand returns the "mailer" command with its subcommands, reading
// stdin and writing stdout and stderr.
func newRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "mailer",
		Short: "Send e-mail over SMTP, replace sendmail, check a server, tend an outbox",
		Long: `mailer sends e-mail over SMTP.

  mailer send       one message from flags and YAML profiles (mumailer's), or
                    one per row of a CSV or JSON-lines file (--recipients)
  mailer sendmail   reads a message on standard input, like sendmail
  mailer check      shows what a server offers and whether a login works
  mailer outbox     migrates an outbox's database (github.com/gomailer/mailer/outbox),
                    lists its messages, resends or drops those of unknown outcome

Passwords need not be on the command line: --password-command, --password-file
or the MAILER_PASSWORD environment variable.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exUsage, msg: fmt.Sprintf("%v (see %s --help)", err, c.CommandPath())}
	})
	root.AddCommand(newSendCommand(), newSendmailCommand(), newCheckCommand(), newOutboxCommand())
	return root
}
