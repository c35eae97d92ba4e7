//! Kernel symbol table (`/proc/kallsyms`) to name drop locations and stack frames
//! (`nf_hook_slow+0x9c`). Read once at load; addresses read as 0 without CAP_SYSLOG, in which
//! case nothing resolves.

use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct KernelSymbols {
    /// Sorted by address.
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                (address != 0 && matches!(kind, "t" | "T" | "W" | "w"))
                    .then(|| (address, name.to_owned()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(address, _)| *address);
        Self { symbols }
    }

    /// `symbol+0xoffset` of the function containing `address`.
    pub fn resolve(&self, address: u64) -> Option<String> {
        let index = self
            .symbols
            .partition_point(|(start, _)| *start <= address)
            .checked_sub(1)?;
        let (start, name) = &self.symbols[index];
        Some(format!("{name}+{:#x}", address - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_to_containing_function() {
        let syms = KernelSymbols::parse(
            "ffffffff81000000 T _stext\nffffffff81a00000 t nf_hook_slow\nffffffff81a00100 T kfree_skb\n0000000000000000 A fixed\n",
        );
        assert_eq!(
            syms.resolve(0xffffffff81a0009c).as_deref(),
            Some("nf_hook_slow+0x9c")
        );
        assert_eq!(
            syms.resolve(0xffffffff81a00100).as_deref(),
            Some("kfree_skb+0x0")
        );
        assert_eq!(syms.resolve(0x10), None);
    }
}
