"""Pure builders: data in, figures and components out. Nothing here touches the database."""
