//! `$(VAR)` expansion in env values, commands and args, as Kubernetes does it: `$(NAME)` becomes the
//! variable's value when it is defined and stays as written when not; `$$` is an escaped `$`.

pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(position) = rest.find('$') {
        output.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            output.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(end) => {
                    let name = &reference[..end];
                    match lookup(name) {
                        Some(value) => output.push_str(&value),
                        None => {
                            output.push_str("$(");
                            output.push_str(name);
                            output.push(')');
                        }
                    }
                    rest = &reference[end + 1..];
                }
                None => {
                    output.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            output.push('$');
            rest = after;
        }
    }
    output.push_str(rest);
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "POD_IP").then(|| "127.0.1.2".to_owned())
    }

    #[test]
    fn expands_defined_keeps_undefined_and_unescapes() {
        assert_eq!(expand("http://$(POD_IP):80", lookup), "http://127.0.1.2:80");
        assert_eq!(
            expand("$(NOPE)-$$(POD_IP)-$x-$(", lookup),
            "$(NOPE)-$(POD_IP)-$x-$("
        );
    }
}
