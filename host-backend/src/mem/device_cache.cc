// placeholder: implemented by the module owner
