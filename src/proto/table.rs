//! Enums whose variants each carry a row of constant data (an HTTP status's
//! code and reason phrase, a close reason's metric label), declared in one
//! place so that adding a variant is one line: the list of every variant
//! (`ALL`), its count (`COUNT`) and its row come from the same declaration,
//! and counters indexed by the variant follow.

/// Declares a field-less enum, `ALL` (every variant, in order), `COUNT`, and
/// a private `row()` that returns the variant's row of data.
macro_rules! table_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $row:ty {
            $( $(#[$vmeta:meta])* $variant:ident => $value:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every variant, in declaration order: `ALL[v as usize] == v`.
            $vis const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// How many variants there are.
            $vis const COUNT: usize = Self::ALL.len();

            fn row(self) -> $row {
                match self {
                    $( $name::$variant => $value, )*
                }
            }
        }
    };
}

pub(crate) use table_enum;
