# Formats both sides use. On the device these files are copied flat (import wire, import blob);
# on the host they are ugate.shared.*. So: no imports between shared modules, stdlib only.
