// certrenew — one Key Vault secret. Deployed through a module so that the
// caller can make it conditional ("only when the value is non-empty").

@description('Name of the existing Key Vault.')
param keyVaultName string

@description('Secret name (letters, digits and dashes).')
param secretName string

@secure()
@description('Secret value.')
param secretValue string

param tags object = {}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: These are credentials issued by AppViewX / Entra ID / the webhook caller whose lifetime is owned by those systems and rotated by operators; a Key Vault expiry would only make the app's Key Vault references stop resolving. Rotation is done by writing a new secret version (the app references the versionless URI).
  parent: keyVault
  name: secretName
  tags: tags
  properties: {
    value: secretValue
    contentType: 'text/plain'
  }
}
